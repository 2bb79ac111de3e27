// A form with data-confirm asks before it is sent (delete buttons): inline handlers are not allowed by the CSP.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (question && !window.confirm(question)) event.preventDefault();
});
