/* Evaluate and predict job pages: once the job has succeeded, draw what it produced from the results
   API: metrics with 95% intervals, ROC / precision-recall / calibration, the confusion matrix, the
   probability histogram and first rows, the heat-map gallery and the filterable per-image list. */
"use strict";

(() => {
  const root = document.getElementById("results");
  if (!root) return;
  const IMAGE_ROWS = 200;  // rows drawn at once in the per-image list (thumbnails load lazily)
  const METRICS = [["sensitivity", "Sensitivity"], ["specificity", "Specificity"], ["ppv", "PPV"], ["npv", "NPV"],
    ["roc_auc", "ROC-AUC"], ["pr_auc", "PR-AUC (average precision)"]];
  const AREAS = new Set(["roc_auc", "pr_auc"]);
  const plain = (extra) => Live.layout("", Object.assign({ height: 300, legend: { orientation: "h", y: -0.3 } }, extra));
  const at = (template, index) => template.replace(/0$/, String(index)).replace(/\/0\//, `/${index}/`);
  let images = [];

  function cell(tag, text, className) {
    const node = document.createElement(tag);
    node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function fact(label, value) {
    const wrap = document.createElement("div");
    wrap.append(cell("dt", label), cell("dd", value));
    return wrap;
  }

  function thresholdNote(threshold) {
    document.getElementById("threshold-note").textContent = threshold === null
      ? "no threshold recorded" : `threshold ${Live.number(threshold.value, 4)}: ${threshold.description}`;
  }

  function showEvaluation(evaluation) {
    const report = evaluation.clinical;
    thresholdNote(evaluation.threshold);
    document.getElementById("headline").replaceChildren(
      fact("Weighted F1", Live.percent(evaluation.weighted_f1)), fact("Accuracy", Live.percent(evaluation.accuracy)),
      fact("Balanced acc.", Live.percent(evaluation.balanced_accuracy)),
      fact("Images", report === null ? String(evaluation.count) : `${evaluation.count} (${report.positives} ALL, ${report.negatives} hem)`));
    drawConfusion(evaluation.confusion);
    if (report === null) {  // written by a version before the clinical report: metrics and confusion only
      document.getElementById("clinical-table").hidden = true;
      document.getElementById("clinical-notes").replaceChildren(
        cell("li", "This evaluation was written before the clinical report: no intervals, curves or calibration.", "warn"));
      document.getElementById("curves").hidden = true;
      return;
    }
    document.querySelector("#clinical-table tbody").replaceChildren(...METRICS.map(([key, label]) => {
      const metric = report.metrics[key], row = document.createElement("tr");
      row.dataset.metric = key;
      const shown = AREAS.has(key) ? Live.number : Live.percent;  // rates as percentages, areas under curves as numbers
      const interval = metric.low === null ? "—" : `${shown(metric.low)} – ${shown(metric.high)}`;
      row.append(cell("td", label), cell("td", metric.value === null ? "undefined" : shown(metric.value)), cell("td", interval));
      return row;
    }));
    const interval = report.interval;
    document.getElementById("interval-note").textContent =
      `95% intervals: ${interval.method}, ${interval.resamples} resamples of the ${interval.units} ${interval.unit}s.`;
    document.getElementById("clinical-notes").replaceChildren(...report.notes.map((note) => cell("li", note, "warn")));
    drawCurves(report);
  }

  function drawConfusion(z) {
    const labels = ["hem (0)", "ALL (1)"];
    Plotly.react("confusion-chart", [{
      type: "heatmap", z, x: labels, y: labels, colorscale: [[0, "#eff6ff"], [1, "#1e40af"]], showscale: false,
      text: z.map((row) => row.map(String)), texttemplate: "%{text}", textfont: { size: 16 },
      hovertemplate: "true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>",
    }], Live.layout("true class", { xaxis: { title: { text: "predicted class" } }, yaxis: { title: { text: "true class" }, autorange: "reversed" },
      margin: { l: 80, r: 16, t: 12, b: 44 } }), Live.config);
  }

  function drawCurves(report) {
    const diagonal = { x: [0, 1], y: [0, 1], mode: "lines", line: { dash: "dot", color: "#94a3b8" }, showlegend: false, hoverinfo: "skip" };
    const auc = report.metrics.roc_auc;
    const rocTraces = auc.value === null ? [diagonal] : [diagonal,
      { x: report.roc.fpr, y: report.roc.tpr, mode: "lines", name: `AUC ${Live.number(auc.value)}`, line: { color: "#2563eb" } },
      { x: [1 - report.metrics.specificity.value], y: [report.metrics.sensitivity.value], mode: "markers",
        name: `threshold ${Live.number(report.threshold, 4)}`, marker: { color: "#0f172a", size: 9 } }];
    Plotly.react("roc-chart", rocTraces, plain({ xaxis: { title: { text: "1 − specificity" }, range: [0, 1] },
      yaxis: { title: { text: "sensitivity" }, range: [0, 1.02] } }), Live.config);
    const ap = report.metrics.pr_auc;
    Plotly.react("pr-chart", ap.value === null ? [] : [{ x: report.pr.recall, y: report.pr.precision, mode: "lines",
      line: { shape: "hv", color: "#f97316" }, name: `AP ${Live.number(ap.value)}` }],
    plain({ xaxis: { title: { text: "recall (sensitivity)" }, range: [0, 1] }, yaxis: { title: { text: "precision (PPV)" }, range: [0, 1.02] } }), Live.config);
    const bins = report.calibration.bins.filter((b) => b.count > 0);
    Plotly.react("calibration-chart", [diagonal,
      { type: "bar", x: bins.map((b) => (b.low + b.high) / 2), y: bins.map((b) => b.fraction_all), width: bins.map((b) => b.high - b.low),
        name: "share that is ALL", marker: { color: "rgba(37, 99, 235, 0.5)" }, customdata: bins.map((b) => b.count),
        hovertemplate: "P(ALL) %{x:.2f}<br>share ALL %{y:.2f}<br>%{customdata} images<extra></extra>" },
      { x: bins.map((b) => b.mean_probability), y: bins.map((b) => b.fraction_all), mode: "markers", name: "mean P(ALL)", marker: { color: "#0f172a" } }],
    plain({ xaxis: { title: { text: "predicted P(ALL)" }, range: [0, 1] }, yaxis: { title: { text: "share that is ALL" }, range: [0, 1.02] } }), Live.config);
    const ece = report.calibration.ece;
    document.getElementById("ece-note").textContent = ece === null ? "" : `ECE ${Live.number(ece)}`;
  }

  function showPrediction(prediction) {
    thresholdNote(prediction.threshold);
    document.getElementById("class-counts").replaceChildren(fact("Images", String(prediction.count)),
      fact("Called ALL", String(prediction.class_counts.all)), fact("Called hem", String(prediction.class_counts.hem)));
    document.querySelector("#first-rows tbody").replaceChildren(...prediction.first_rows.map((row) => {
      const line = document.createElement("tr");
      line.append(cell("td", row.ID), cell("td", row.label === 1 ? "1 (ALL)" : "0 (hem)"), cell("td", row.prob_all.toFixed(4)));
      return line;
    }));
    const { edges, counts } = prediction.histogram;
    Plotly.react("histogram-chart", [{ type: "bar", x: edges.slice(0, -1).map((e, i) => (e + edges[i + 1]) / 2), y: counts,
      width: edges.slice(0, -1).map((e, i) => edges[i + 1] - e), marker: { color: "#2563eb" }, name: "images" }],
    plain({ xaxis: { title: { text: "P(ALL)" }, range: [0, 1] }, yaxis: { title: { text: "images" } },
      shapes: [{ type: "line", x0: prediction.threshold.value, x1: prediction.threshold.value, y0: 0, y1: 1, yref: "paper", line: { color: "#dc2626", dash: "dash" } }] }), Live.config);
  }

  function showGallery(results, artifacts) {
    if (!results.explained.length) return;
    document.getElementById("gallery-card").hidden = false;
    document.getElementById("gallery-count").textContent = `${results.explained.length} images`;
    document.getElementById("convention").textContent = results.explanation_convention || "";
    const zip = artifacts.find((a) => a.name === "explanations.zip");
    const link = document.getElementById("gallery-zip");
    if (zip) link.href = at(document.getElementById("job").dataset.downloadUrl, zip.id); else link.hidden = true;
    document.getElementById("gallery").replaceChildren(...results.explained.map((item, index) => {
      const figure = document.createElement("figure");
      const picture = document.createElement("img");
      picture.src = at(root.dataset.explanationUrl, index + 1);
      picture.alt = `heat map of ${item.ID}`;
      picture.loading = "lazy";
      const truth = item.true_label === null ? "" : ` · true ${item.true_label === 1 ? "ALL" : "hem"}`;
      figure.append(picture, cell("figcaption", `${item.ID} · ${item.why} · P(ALL) ${item.prob_all.toFixed(3)}${truth}`));
      return figure;
    }));
  }

  /* Per subject (known for the C-NMC prelim and the training folds), worst accuracy first, as evaluation.json has it. */
  function showSubjects(subjects) {
    if (!subjects.length) return;
    document.getElementById("subjects-card").hidden = false;
    document.getElementById("subjects-count").textContent = `${subjects.length} subjects`;
    document.querySelector("#subjects-table tbody").replaceChildren(...subjects.map((subject) => {
      const line = document.createElement("tr");
      line.className = subject.accuracy < 0.5 ? "wrong" : "";
      line.append(cell("td", String(subject.subject)), cell("td", Number(subject.label) === 1 ? "ALL" : "hem"),
        cell("td", String(subject.images)), cell("td", Live.percent(subject.accuracy)), cell("td", Live.percent(subject.called_all)),
        cell("td", Live.number(subject.mean_prob_1)));
      return line;
    }));
  }

  function orderedImages() {
    const filter = document.getElementById("image-filter").value, order = document.getElementById("image-order").value;
    const threshold = Number(root.dataset.threshold);
    const margin = (image) => Math.abs(image.prob_all - threshold);
    let rows = images.map((image, index) => ({ image, index: index + 1 }));
    if (filter === "wrong") rows = rows.filter((r) => !r.image.correct);
    else if (filter === "0" || filter === "1") rows = rows.filter((r) => r.image.true_label === Number(filter));
    const sorters = {
      wrong: (a, b) => (a.image.correct - b.image.correct) || (margin(b.image) - margin(a.image)),
      uncertain: (a, b) => margin(a.image) - margin(b.image),
      confident: (a, b) => margin(b.image) - margin(a.image),
      csv: (a, b) => a.index - b.index,
    };
    return rows.sort(sorters[order]);
  }

  function showImages() {
    const rows = orderedImages();
    const explained = new Map();
    (root.results ? root.results.explained : []).forEach((item, index) => explained.set(item.file, index + 1));
    document.getElementById("images-count").textContent = `${rows.length} of ${images.length}`;
    document.querySelector("#images-table tbody").replaceChildren(...rows.slice(0, IMAGE_ROWS).map(({ image, index }) => {
      const line = document.createElement("tr");
      line.className = image.correct ? "" : "wrong";
      const thumb = document.createElement("img");
      thumb.src = at(root.dataset.thumbnailUrl, index);
      thumb.loading = "lazy";
      thumb.alt = image.ID;
      thumb.className = "thumb";
      const thumbCell = document.createElement("td");
      thumbCell.append(thumb);
      const mapCell = document.createElement("td");
      if (image.explanation && explained.has(image.explanation)) {
        const link = document.createElement("a");
        link.href = at(root.dataset.explanationUrl, explained.get(image.explanation));
        link.textContent = "heat map";
        mapCell.append(link);
      }
      line.append(cell("td", String(index)), thumbCell, cell("td", image.ID), cell("td", image.subject || "—"),
        cell("td", image.true_label === 1 ? "ALL" : "hem"), cell("td", image.prob_all.toFixed(3)),
        cell("td", image.predicted === 1 ? "ALL" : "hem"), mapCell);
      return line;
    }));
    const more = document.getElementById("images-more");
    more.hidden = rows.length <= IMAGE_ROWS;
    more.textContent = `Showing the first ${IMAGE_ROWS}; per_image.csv under Files has all of them.`;
  }

  async function load(job) {
    if (job.status !== JobStatus.succeeded || root.dataset.loaded) return;
    root.dataset.loaded = "true";
    document.getElementById("results-pending").hidden = true;
    const page = document.getElementById("job");
    const [results, artifacts] = await Promise.all([Live.getJSON(root.dataset.resultsUrl), Live.getJSON(page.dataset.artifactsUrl)]);
    root.results = results;
    root.querySelectorAll("[data-results]").forEach((node) => { node.hidden = false; });
    if (results.evaluation) {
      root.dataset.threshold = results.evaluation.threshold ? results.evaluation.threshold.value : 0.5;
      showEvaluation(results.evaluation);
      showSubjects(results.evaluation.subjects);
      images = (await Live.getJSON(root.dataset.imagesUrl)).images;
      document.getElementById("images-card").hidden = false;
      ["image-filter", "image-order"].forEach((id) => document.getElementById(id).addEventListener("change", showImages));
      showImages();
    }
    if (results.prediction) showPrediction(results.prediction);
    showGallery(results, artifacts.artifacts);
    window.dispatchEvent(new Event("resize"));  // charts drawn while hidden take their width now
  }

  document.addEventListener("job:finished", (event) => { load(event.detail).catch((error) => console.warn(error)); });
})();
