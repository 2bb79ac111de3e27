/* Cross-validation page: live.js keeps the regions the server draws (fold table, mean ± std, out-of-fold results,
   the ensemble list and button) current while a fold or ensemble job is queued or running; this overlays each
   fold's curves from the metrics API, at first and whenever the fold table changes. */
"use strict";

(() => {
  const root = document.getElementById("cv");
  if (!root) return;

  /* No axes before a fold has validated an epoch (plotly would invent epoch −1…6 and −100%…400%): a note says what
     comes; then epochs from 1 to the last one drawn and accuracy 0–100%, as on a job page. */
  async function drawCurves() {
    const folds = [...document.querySelectorAll("#fold-rows tr[data-fold]")].map((row) => row.dataset);
    const { results, loss, accuracy } = await Live.runCurves(root.dataset.metricsUrl, folds.map((fold) => fold.jobId),
      (result, index) => `fold ${folds[index].fold}`);
    const epochs = results.flatMap((result) => result.epochs.map((m) => m.epoch));
    root.querySelectorAll("[data-waiting]").forEach((node) => { node.hidden = epochs.length > 0; });
    if (!epochs.length) return;
    const xaxis = Live.epochAxis(Math.max(...epochs));
    Plotly.react("cv-loss", loss, Live.layout("loss", { xaxis, legend: { orientation: "h", y: -0.32 } }), Live.config);
    Plotly.react("cv-accuracy", accuracy, Live.layout("valid accuracy", { xaxis, yaxis: Live.accuracyAxis("valid accuracy") }),
      Live.config);
  }

  Live.follow(root, (changed) => {
    if (changed.has("folds")) drawCurves().catch((error) => console.warn(error));
  });
})();
