/* Submit forms: the CSV and split names offered beside a CSV box (web/templates/_macros.html, split_field; the
   cross-validation's ensemble form) fill it when picked; on a form with a data folder they follow the folder
   chosen, and so does the box's preset until someone types or picks a name. */
"use strict";

document.querySelectorAll(".split-field").forEach((field) => {
  const box = field.querySelector("input");
  const folder = field.closest("form").querySelector('select[name="data_folder"]');
  const groups = [...field.querySelectorAll(".split-choices[data-folder]")];
  const shown = () => groups.find((group) => !group.hidden);
  let preset = Boolean(folder) && box.value === (shown() ? shown().dataset.preset : "");

  if (folder) {
    folder.addEventListener("change", () => {
      groups.forEach((group) => { group.hidden = group.dataset.folder !== folder.value; });
      if (preset) box.value = shown() ? shown().dataset.preset : "";
    });
  }
  box.addEventListener("input", () => { preset = false; });
  field.addEventListener("click", (event) => {
    const name = event.target.dataset ? event.target.dataset.value : undefined;
    if (name === undefined) return;
    box.value = name;
    preset = false;
    box.focus();
  });
});
