// The job statuses, as core.service.records.JobStatus names them (base.html writes them on <body>):
// scripts compare with JobStatus.queued, never with a string of their own.
"use strict";
const JobStatus = Object.freeze(Object.fromEntries(
  JSON.parse(document.body.dataset.jobStatuses || "[]").map((name) => [name, name])));
