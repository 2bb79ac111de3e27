/* Cross-validation page: each fold's curves overlaid (one colour per fold), from the metrics API;
   while folds run, the page reloads every few seconds. */
"use strict";

(async () => {
  const root = document.getElementById("cv");
  if (!root) return;
  const ids = root.dataset.jobIds.split(",");
  const folds = root.dataset.folds.split(",");
  const base = root.dataset.metricsUrl.replace("/0/", "/{id}/");
  const results = await Promise.all(ids.map((id) => Live.getJSON(base.replace("{id}", id))));
  const palette = ["#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#475569"];
  const loss = [], accuracy = [];
  results.forEach((result, index) => {
    const x = result.epochs.map((m) => m.epoch);
    const color = palette[index % palette.length];
    const name = `fold ${folds[index]}`;
    loss.push({ x, y: result.epochs.map((m) => m.train_loss), name: `${name} train`, mode: "lines+markers", line: { color, dash: "dot" } });
    loss.push({ x, y: result.epochs.map((m) => m.valid_loss), name: `${name} valid`, mode: "lines+markers", line: { color } });
    accuracy.push({ x, y: result.epochs.map((m) => m.valid_accuracy), name, mode: "lines+markers", line: { color } });
  });
  Plotly.react("cv-loss", loss, Live.layout("loss", { legend: { orientation: "h", y: -0.32 } }), Live.config);
  Plotly.react("cv-accuracy", accuracy, Live.layout("valid accuracy", {
    yaxis: { title: { text: "valid accuracy" }, tickformat: ".0%", gridcolor: "#e2e8f0" } }), Live.config);
  if (root.dataset.finished !== "true") setTimeout(() => window.location.reload(), 5000);
})();
