// Console pages: live progress by polling, and copy-to-clipboard buttons (no inline script: CSP).
//
// An element with data-poll="URL" asks URL for JSON every 2 s. Upload pages: {status, percent,
// finished}; the status text and the <progress> follow, and the page reloads once the job is
// finished to show its report. Runs pages: {runs: [{key, status, progress, finished}]}; each
// element [data-run="key"] gets the status and [data-run-progress="key"] the progress text; the
// page reloads once when a run it shows finishes (results, models and new options appear then).
(function () {
  "use strict";
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.getElementById(button.dataset.copy);
      field.select();
      if (navigator.clipboard) { navigator.clipboard.writeText(field.value).catch(function () {}); }
      button.textContent = "Copied";
    });
  });
  var poller = document.querySelector("[data-poll]");
  if (!poller || poller.dataset.finished === "1") { return; }
  var url = poller.dataset.poll;
  function tick() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        if (data.runs) {
          var reload = false;
          data.runs.forEach(function (run) {
            var cell = document.querySelector('[data-run="' + run.key + '"]');
            if (!cell) { return; }
            if (cell.textContent !== run.status) {
              cell.textContent = run.status;
              if (run.finished) { reload = true; }
            }
            var progress = document.querySelector('[data-run-progress="' + run.key + '"]');
            if (progress) { progress.textContent = run.progress; }
          });
          if (reload) { window.location.reload(); return; }
          if (!data.active) { return; }
        } else {
          poller.textContent = data.status;
          var bar = document.getElementById("job-progress");
          if (bar) { bar.value = data.percent; }
          if (data.finished) { window.location.reload(); return; }
        }
        window.setTimeout(tick, 2000);
      })
      .catch(function () { window.setTimeout(tick, 5000); });
  }
  window.setTimeout(tick, 1000);
})();
