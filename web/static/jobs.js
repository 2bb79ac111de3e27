/* Job list: while any row is unfinished, poll the same page of the API and update those rows in place. */
"use strict";

(() => {
  const table = document.getElementById("jobs");
  if (!table) return;

  function updateRow(row, job) {
    Live.showStatus(row, job, "no worker");
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
