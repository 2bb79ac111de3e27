/* Cross-validation page: while a fold or ensemble job is queued or running, poll the cross-validation
   (GET /api/cross-validations/<id>) and redraw the fold table, mean ± std, out-of-fold results, the
   ensemble list and each fold's curves in place. No reload: the ensemble form keeps what was typed. */
"use strict";

(() => {
  const root = document.getElementById("cv");
  if (!root) return;
  const intervalMs = Number(root.dataset.pollMs) || 2000;
  const jobPage = (id) => root.dataset.jobPageUrl.replace(/0$/, String(id));
  const metric = Live.percent;  // fold metrics as every page writes them (core.common.formats.percent)
  const live = (status) => status === JobStatus.queued || status === JobStatus.running;

  function cell(content, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.append(content);
    return td;
  }

  function code(text) {
    const node = document.createElement("code");
    node.textContent = text === null || text === undefined ? "" : text;
    return node;
  }

  function jobLink(id) {
    const link = document.createElement("a");
    link.href = jobPage(id);
    link.textContent = `#${id}`;
    return link;
  }

  /* The badge of web/templates/_macros.html, badge(status). */
  function badge(status) {
    const node = document.createElement("span");
    node.className = `badge badge-${status}`;
    node.dataset.field = "status";
    node.textContent = status;
    return node;
  }

  function foldRow(fold) {
    const row = document.createElement("tr");
    row.dataset.fold = fold.fold;
    const status = cell(badge(fold.status));
    if (fold.status === JobStatus.running) status.append(` ${Math.round(100 * fold.progress)}%`);
    row.append(cell(String(fold.fold)), cell(jobLink(fold.job_id)), status, cell(code(fold.split)), cell(code(fold.valid_split)));
    if (fold.best) {
      const best = fold.best;
      row.append(cell(String(best.epoch)), cell(metric(best.accuracy)), cell(metric(best.balanced_accuracy)),
        cell(metric(best.weighted_f1)));
    } else {
      const none = cell("no finished epoch yet", "muted");
      none.colSpan = 4;
      row.append(none);
    }
    return row;
  }

  function showSummary(cv) {
    document.getElementById("fold-rows").replaceChildren(...cv.folds.map(foldRow));
    Object.entries(cv.mean_std).forEach(([name, value]) => {
      const node = root.querySelector(`[data-mean="${name}"]`);
      if (!node) return;
      node.textContent = value.mean === null ? "—" : metric(value.mean) + (value.std === null ? "" : ` ± ${metric(value.std)}`);
    });
    const oof = cv.out_of_fold;
    document.getElementById("out-of-fold").hidden = !oof;
    if (oof) {
      root.querySelectorAll("[data-oof]").forEach((node) => {
        const name = node.dataset.oof;
        node.textContent = name === "count" ? String(oof.count) : metric(oof[name]);
      });
    }
    showSubjects(oof ? oof.subjects || [] : []);
    showEnsembles(cv);
  }

  function showSubjects(subjects) {
    document.getElementById("oof-subjects").hidden = !subjects.length;
    document.getElementById("oof-subjects-wait").hidden = subjects.length > 0;
    document.querySelector("#oof-subjects tbody").replaceChildren(...subjects.map((s) => {
      const row = document.createElement("tr");
      row.append(cell(String(s.subject)), cell(s.label === 1 ? "ALL" : "hem"), cell(String(s.images)),
        cell(Live.percent(s.accuracy)), cell(Live.percent(s.called_all)));
      return row;
    }));
  }

  /* The ensemble jobs' list, and the form's button once every fold has succeeded (its fields are left alone). */
  function showEnsembles(cv) {
    document.getElementById("ensemble-jobs").replaceChildren(...cv.ensembles.map((e) => {
      const item = document.createElement("li");
      item.append(jobLink(e.job_id), ` ${e.kind} on `, code(e.split), e.tta ? " with TTA " : " ", badge(e.status));
      return item;
    }));
    const button = document.getElementById("ensemble-submit");
    if (button) {
      button.disabled = !cv.finished;
      button.title = cv.finished ? "" : "every fold must succeed first";
      document.getElementById("ensemble-wait").hidden = cv.finished;
    }
  }

  /* No axes before a fold has validated an epoch (plotly would invent epoch −1…6 and −100%…400%): a note says what
     comes; then epochs from 1 to the last one drawn and accuracy 0–100%, as on a job page. */
  async function drawCurves(cv) {
    const ids = cv.folds.map((fold) => fold.job_id);
    const { results, loss, accuracy } = await Live.runCurves(root.dataset.metricsUrl, ids, (result, index) => `fold ${cv.folds[index].fold}`);
    const epochs = results.flatMap((result) => result.epochs.map((m) => m.epoch));
    root.querySelectorAll("[data-waiting]").forEach((node) => { node.hidden = epochs.length > 0; });
    if (!epochs.length) return;
    const xaxis = Live.epochAxis(Math.max(...epochs));
    Plotly.react("cv-loss", loss, Live.layout("loss", { xaxis, legend: { orientation: "h", y: -0.32 } }), Live.config);
    Plotly.react("cv-accuracy", accuracy, Live.layout("valid accuracy", { xaxis, yaxis: Live.accuracyAxis("valid accuracy") }),
      Live.config);
  }

  /* One update; true while any fold or ensemble job is still queued or running. */
  async function refresh() {
    const cv = await Live.getJSON(root.dataset.cvUrl);
    showSummary(cv);
    await drawCurves(cv);
    const again = [...cv.folds, ...cv.ensembles].some((job) => live(job.status));
    root.dataset.finished = String(!again);
    return again;
  }

  refresh().then((again) => { if (again) Live.poll(refresh, intervalMs); }).catch((error) => console.warn(error));
})();
