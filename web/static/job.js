/* Job detail page: poll the job (and a training job's metrics) every ~2 s; update the facts, curves, confusion matrix and files. */
"use strict";

(() => {
  const root = document.getElementById("job");
  if (!root) return;
  const intervalMs = Number(root.dataset.pollMs) || 2000;

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

  function metricsRows(epochs) {
    const body = document.getElementById("metrics-body");
    body.replaceChildren(...epochs.map((m) => {
      const row = document.createElement("tr");
      [m.epoch, Live.number(m.train_loss, 4), Live.percent(m.train_accuracy), Live.number(m.valid_loss, 4),
        Live.percent(m.valid_accuracy), Live.percent(m.valid_balanced_accuracy), Live.percent(m.valid_f1),
        Live.number(m.valid_roc_auc),
        Live.number(m.lr), Live.number(m.seconds), Live.number(m.images_per_s)].forEach((value) => {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.appendChild(cell);
      });
      return row;
    }));
  }

  function artifactList(artifacts) {
    const list = document.getElementById("artifacts");
    if (!artifacts.length) return;
    const base = root.dataset.downloadUrl.replace(/0$/, "");
    const predictions = artifacts.find((a) => a.name === "predictions.csv");
    const button = document.getElementById("download-predictions");  // a predict job's page
    if (button && predictions) {
      button.href = base + predictions.id;
      button.hidden = false;
    }
    list.replaceChildren(...artifacts.map((a) => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = base + a.id;
      link.textContent = a.name;
      const note = document.createElement("span");
      note.className = "muted small";
      note.textContent = ` ${a.kind} · ${Live.bytes(a.size_bytes)}`;
      item.append(link, " ", note);
      return item;
    }));
  }

  function showJob(job) {
    Live.showStatus(root, job, "no live worker");
    Live.setText(root, "worker", job.worker_host || "—");
    Live.setText(root, "attempts", `${job.attempts}/${job.max_attempts}`);
    Live.setText(root, "started", Live.when(job.status === JobStatus.queued ? null : job.started_at));
    Live.setText(root, "finished", Live.when(job.finished_at));
    Live.setText(root, "duration", Live.duration(Live.runSeconds(job)));
    Live.setText(root, "log_tail", job.log_tail || "");
    root.querySelector('[data-field="log_tail"]').hidden = !job.log_tail;
    root.querySelector('[data-field="log_empty"]').hidden = Boolean(job.log_tail);
    const error = root.querySelector('[data-field="error"]');
    error.textContent = job.error || "";
    error.hidden = !job.error;
    const note = root.querySelector('[data-field="attempt_note"]');
    note.textContent = job.attempt_note || "";
    note.hidden = !job.attempt_note;
    root.querySelectorAll("[data-show-when]").forEach((node) => {
      node.hidden = !node.dataset.showWhen.split(" ").includes(job.status);
    });
    root.dataset.finished = String(job.finished);
  }

  // Only train and finetune pages have epoch curves; evaluate and predict pages draw results.js's panels.
  const training = document.getElementById("loss-chart") !== null;

  async function refresh() {
    const job = await Live.getJSON(root.dataset.jobUrl);
    showJob(job);
    if (training) {
      const metrics = await Live.getJSON(root.dataset.metricsUrl);
      if (metrics.epochs.length) metricsRows(metrics.epochs);
      drawCurves(metrics.epochs);
      drawConfusion(metrics.epochs);
    }
    if (job.finished) {
      artifactList((await Live.getJSON(root.dataset.artifactsUrl)).artifacts);
      document.dispatchEvent(new CustomEvent("job:finished", { detail: job }));
    }
    return !job.finished;
  }

  refresh().then((again) => { if (again) Live.poll(refresh, intervalMs); }).catch((error) => console.warn(error));
})();
