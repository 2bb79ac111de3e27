/* Compare page: the runs' loss and valid accuracy curves overlaid, from the metrics API, and the ROC
   curves of the evaluate jobs among them, from the results API. */
"use strict";

(async () => {
  const root = document.getElementById("compare");
  if (!root) return;
  const ids = root.dataset.ids.split(",");
  // Each run's legend names its tags too (data-tags: one list per id, in the order of data-ids).
  const tags = JSON.parse(root.dataset.tags || "[]");
  const label = (result, index) => (tags[index] && tags[index].length ? `#${result.job_id} [${tags[index].join(", ")}]` : `#${result.job_id}`);
  const { results, loss, accuracy } = await Live.runCurves(root.dataset.metricsUrl, ids, label);
  // Evaluate jobs have no epochs: with none among the runs, no empty curve panels.
  const epochs = results.flatMap((result) => result.epochs.map((m) => m.epoch));
  document.getElementById("compare-curves").hidden = !epochs.length;
  if (epochs.length) {  // epochs from 1 and accuracy 0–100%, as on a job page
    const xaxis = Live.epochAxis(Math.max(...epochs));
    Plotly.react("compare-loss", loss, Live.layout("loss", { xaxis }), Live.config);
    Plotly.react("compare-accuracy", accuracy, Live.layout("valid accuracy", { xaxis, yaxis: Live.accuracyAxis("valid accuracy") }),
      Live.config);
  }
  const rocResults = await Promise.all(ids.map((id) => Live.getJSON(root.dataset.resultsUrl.replace("/0/", `/${id}/`))));
  const roc = [{ x: [0, 1], y: [0, 1], mode: "lines", line: { dash: "dot", color: "#94a3b8" }, showlegend: false, hoverinfo: "skip" }];
  rocResults.forEach((result, index) => {
    const report = result.evaluation && result.evaluation.clinical;
    if (!report || report.metrics.roc_auc.value === null) return;
    const auc = report.metrics.roc_auc;
    const interval = auc.low === null ? "" : ` [${Live.number(auc.low)}, ${Live.number(auc.high)}]`;
    roc.push({ x: report.roc.fpr, y: report.roc.tpr, mode: "lines", name: `#${result.job_id} AUC ${Live.number(auc.value)}${interval}`,
      line: { color: Live.color(index) } });
  });
  document.getElementById("compare-roc-none").hidden = roc.length > 1;
  document.getElementById("compare-roc").hidden = roc.length === 1;
  if (roc.length > 1) {
    Plotly.react("compare-roc", roc, Live.layout("sensitivity", { height: 360, xaxis: { title: { text: "1 − specificity" }, range: [0, 1], gridcolor: "#e2e8f0" },
      yaxis: { title: { text: "sensitivity" }, range: [0, 1.02], gridcolor: "#e2e8f0" } }), Live.config);
  }
})();
