/* Cross-validation page: each fold's curves overlaid (one colour per fold), from the metrics API;
   while folds run, the page reloads every few seconds. */
"use strict";

(async () => {
  const root = document.getElementById("cv");
  if (!root) return;
  const ids = root.dataset.jobIds.split(",");
  const folds = root.dataset.folds.split(",");
  const { loss, accuracy } = await Live.runCurves(root.dataset.metricsUrl, ids, (result, index) => `fold ${folds[index]}`);
  Plotly.react("cv-loss", loss, Live.layout("loss", { legend: { orientation: "h", y: -0.32 } }), Live.config);
  Plotly.react("cv-accuracy", accuracy, Live.layout("valid accuracy", {
    yaxis: { title: { text: "valid accuracy" }, tickformat: ".0%", gridcolor: "#e2e8f0" } }), Live.config);
  if (root.dataset.finished !== "true") setTimeout(() => window.location.reload(), 5000);
})();
