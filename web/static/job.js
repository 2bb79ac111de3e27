/* Job page: live.js keeps the regions the server draws (status, facts, actions, metrics table, files, log) current
   while the job runs; this draws a training job's curves and confusion matrix from the metrics API, at first and
   whenever its metrics table changes, and tells results.js once the job is finished. */
"use strict";

(() => {
  const root = document.getElementById("job");
  if (!root) return;

  /* No axes before the first epoch (plotly would invent ranges such as epoch −1…6): a note says what comes. */
  function drawCurves(epochs) {
    root.querySelectorAll("[data-waiting]").forEach((node) => { node.hidden = epochs.length > 0; });
    if (!epochs.length) return;
    const x = epochs.map((m) => m.epoch);
    const epochAxis = Live.epochAxis(Math.max(...x));
    const line = (key, name, color, dash) => ({
      x, y: epochs.map((m) => m[key]), name, mode: "lines+markers", line: { color, dash }, connectgaps: true,
    });
    Plotly.react("loss-chart", [line("train_loss", "train", "#2563eb"), line("valid_loss", "valid", "#f97316")],
      Live.layout("loss", { xaxis: epochAxis }), Live.config);
    Plotly.react("accuracy-chart", [
      line("train_accuracy", "train", "#2563eb"), line("valid_accuracy", "valid", "#f97316"),
      line("valid_balanced_accuracy", "valid balanced", "#16a34a", "dot"),
    ], Live.layout("accuracy", { xaxis: epochAxis, yaxis: Live.accuracyAxis("accuracy") }), Live.config);
  }

  function drawConfusion(epochs) {
    const last = [...epochs].reverse().find((m) => m.confusion);
    const note = document.getElementById("confusion-epoch");
    if (!last) { note.textContent = "(after the first validated epoch)"; return; }
    note.textContent = `epoch ${last.epoch}, validation`;
    const labels = ["hem (0)", "ALL (1)"];  // as the evaluate page and the data-folder page name the classes
    const z = last.confusion;
    Plotly.react("confusion-chart", [{
      type: "heatmap", z, x: labels, y: labels, colorscale: [[0, "#eff6ff"], [1, "#1e40af"]], showscale: false,
      text: z.map((row) => row.map(String)), texttemplate: "%{text}", textfont: { size: 16 },
      hovertemplate: "true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>",
    }], Live.layout("true class", {
      xaxis: { title: { text: "predicted class" }, side: "bottom" },
      yaxis: { title: { text: "true class" }, autorange: "reversed" }, height: 280,
      margin: { l: 110, r: 16, t: 12, b: 44 },
    }), Live.config);
  }

  async function drawCharts() {
    const metrics = await Live.getJSON(root.dataset.metricsUrl);
    drawCurves(metrics.epochs);
    drawConfusion(metrics.epochs);
  }

  // Only train and finetune pages have epoch curves; evaluate and predict pages draw results.js's panels.
  const training = document.getElementById("loss-chart") !== null;

  Live.follow(root, (changed) => {
    if (training && changed.has("metrics")) drawCharts().catch((error) => console.warn(error));
    if (root.dataset.finished === "true") {
      document.dispatchEvent(new CustomEvent("job:finished", { detail: { status: root.dataset.status } }));
    }
  });
})();
