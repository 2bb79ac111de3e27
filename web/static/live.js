/* Shared helpers for the live pages: polling (the job list, the job and cross-validation pages swap in their
   server-drawn regions), number formats, chart layouts. */
"use strict";

const Live = {
  async getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return response.json();
  },

  /* Call step() every intervalMs until it resolves to false (the job is finished). */
  poll(step, intervalMs) {
    const tick = async () => {
      let again = true;
      try { again = await step(); } catch (error) { console.warn(error); }
      if (again) setTimeout(tick, intervalMs);
    };
    setTimeout(tick, intervalMs);
  },

  /* Keep root's regions ([data-live="name"], drawn by the server) current until root.dataset.finished is "true":
     every data-poll-ms, GET data-live-url (the same regions drawn alone, from the same template) and morph each
     changed one into place (one the page lacks, such as a button a viewer is not shown, is skipped). The response
     root's data-* replace root's. onUpdate(changed) runs at once with every region's name, then after each fetch
     with the names of the regions that changed. A 4xx or a redirect (the job deleted, the session over) stops it;
     a 5xx or a lost connection is tried again. */
  follow(root, onUpdate = () => {}) {
    const regions = (node) => [...node.querySelectorAll("[data-live]")];
    const finished = () => root.dataset.finished === "true";
    const step = async () => {
      const url = root.dataset.liveUrl;
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (response.redirected || (response.status >= 400 && response.status < 500)) {
        console.warn(`${url}: ${response.redirected ? "redirected to " + response.url : response.status}; no more updates`);
        return false;
      }
      if (!response.ok) throw new Error(`${url}: ${response.status}`);
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html").body.firstElementChild;
      const changed = new Set();
      regions(fresh).forEach((region) => {
        const shown = root.querySelector(`[data-live="${region.dataset.live}"]`);
        if (!shown || shown.isEqualNode(region)) return;
        Live.morph(shown, region);
        changed.add(region.dataset.live);
      });
      Object.assign(root.dataset, fresh.dataset);
      onUpdate(changed);
      return !finished();
    };
    const start = () => {
      onUpdate(new Set(regions(root).map((node) => node.dataset.live)));
      if (!finished()) Live.poll(step, Number(root.dataset.pollMs) || 2000);
    };
    // Once every script of the page has run, so that their listeners (results.js's job:finished) hear the first update.
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
  },

  /* Make node equal to fresh, changing only what differs: elements that stay keep their focus, a typed value,
     a selection and a running transition (the progress bar), so nothing flickers. An element of another id is
     another thing (Cancel becoming Retry): it is replaced, so focus never moves to it. Children with an id are
     matched by it (a job list's rows): a new one is inserted and those after it stay the same elements. */
  morph(node, fresh) {
    if (node.nodeType !== fresh.nodeType || node.nodeName !== fresh.nodeName || node.id !== fresh.id) {
      node.replaceWith(fresh);
    } else if (node.nodeType !== Node.ELEMENT_NODE) {
      if (node.nodeValue !== fresh.nodeValue) node.nodeValue = fresh.nodeValue;
    } else {
      [...node.attributes].forEach(({ name }) => { if (!fresh.hasAttribute(name)) node.removeAttribute(name); });
      [...fresh.attributes].forEach(({ name, value }) => { if (node.getAttribute(name) !== value) node.setAttribute(name, value); });
      const next = [...fresh.childNodes], ids = new Set(next.map((child) => child.id).filter(Boolean));
      [...node.childNodes].forEach((child) => { if (child.id && !ids.has(child.id)) child.remove(); });
      const kept = new Map([...node.childNodes].filter((child) => child.id).map((child) => [child.id, child]));
      next.forEach((child, index) => {
        const current = node.childNodes[index] || null, same = child.id && kept.get(child.id);
        if (same) {
          if (same !== current) node.insertBefore(same, current);
          Live.morph(same, child);
        } else if (current && !current.id) Live.morph(current, child);
        else node.insertBefore(child, current);
      });
      while (node.childNodes.length > next.length) node.lastChild.remove();
    }
  },

  /* Numbers in the panels results.js draws, as core.common.formats writes them (the templates' filters): a metric
     in [0, 1] as a percentage with one decimal; a value that is not a share with significant digits. */
  percent(value) { return value === null || value === undefined ? "—" : `${(100 * value).toFixed(1)}%`; },
  number(value, digits = 3) { return value === null || value === undefined ? "—" : Number(value.toPrecision(digits)).toString(); },

  layout(yTitle, extra = {}) {
    return Object.assign({
      margin: { l: 56, r: 16, t: 12, b: 44 }, height: 280,
      font: { family: "system-ui, -apple-system, Segoe UI, sans-serif", size: 12, color: "#334155" },
      xaxis: { title: { text: "epoch" }, dtick: 1, gridcolor: "#e2e8f0", zeroline: false },
      yaxis: { title: { text: yTitle }, gridcolor: "#e2e8f0", zeroline: false },
      legend: { orientation: "h", y: -0.25 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    }, extra);
  },
  /* Fixed ranges for the curves, so a short run never shows epoch 0 or an accuracy of −100%…400%:
     epochs from 1 to the last one drawn, one tick each; accuracy 0–100%. */
  epochAxis(lastEpoch) {
    return { title: { text: "epoch" }, range: [0.5, Math.max(1, lastEpoch) + 0.5], dtick: 1, gridcolor: "#e2e8f0", zeroline: false };
  },
  accuracyAxis(title) {
    return { title: { text: title }, range: [0, 1.02], tickformat: ".0%", gridcolor: "#e2e8f0", zeroline: false };
  },
  config: { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] },
  palette: ["#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#475569"],
  color(index) { return Live.palette[index % Live.palette.length]; },

  /* Several runs' curves overlaid (the compare and cross-validation pages): each run's metrics from
     metricsUrl (its id in place of the 0), one colour per run, labelled name(result, index). */
  async runCurves(metricsUrl, ids, name) {
    const results = await Promise.all(ids.map((id) => Live.getJSON(metricsUrl.replace("/0/", `/${id}/`))));
    const loss = [], accuracy = [];
    results.forEach((result, index) => {
      const x = result.epochs.map((m) => m.epoch);
      const color = Live.color(index);
      const label = name(result, index);
      loss.push({ x, y: result.epochs.map((m) => m.train_loss), name: `${label} train`, mode: "lines+markers", line: { color, dash: "dot" } });
      loss.push({ x, y: result.epochs.map((m) => m.valid_loss), name: `${label} valid`, mode: "lines+markers", line: { color } });
      accuracy.push({ x, y: result.epochs.map((m) => m.valid_accuracy), name: label, mode: "lines+markers", line: { color } });
    });
    return { results, loss, accuracy };
  },
};
