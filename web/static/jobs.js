/* Job list: live.js keeps the regions the server draws (the count, disk use, lost workers, the rows and the pager)
   current while a job shown is queued or running; new jobs of the same filter appear in the meantime. */
"use strict";

(() => {
  const root = document.getElementById("job-list");
  if (root) Live.follow(root);
})();
