/* Job list: while any row is unfinished, poll the same page of the API and update those rows in place. */
"use strict";

(() => {
  const table = document.getElementById("jobs");
  if (!table) return;

  function updateRow(row, job) {
    Live.setBadge(row, job.status);
    Live.setProgress(row, job.progress);
    Live.setText(row, "epoch", Live.epoch(job));
    Live.setText(row, "eta", Live.duration(job.eta_s));
    Live.setText(row, "images_per_s", Live.number(job.images_per_s));
    Live.setText(row, "best", Live.percent(job.best_valid_accuracy));
    const queue = row.querySelector('[data-field="queue"]');
    queue.textContent = Live.queueText(job);
    if (!job.finished && !job.queue_served) {
      const warn = document.createElement("span");
      warn.className = "warn";
      warn.textContent = "no worker";
      queue.append(" ", warn);
    }
    row.dataset.finished = String(job.finished);
  }

  const unfinished = () => table.querySelectorAll('tr[data-finished="false"]').length > 0;

  async function refresh() {
    const page = await Live.getJSON(table.dataset.pollUrl);
    page.jobs.forEach((job) => {
      const row = table.querySelector(`tr[data-job-id="${job.id}"]`);
      if (row) updateRow(row, job);
    });
    return unfinished();
  }

  if (unfinished()) Live.poll(refresh, 2000);
})();
