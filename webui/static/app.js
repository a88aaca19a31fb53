// Auto-refresh of the latest view: off unless the reader turns it on,
// remembered in localStorage, paused while the tab is hidden.
(function () {
  "use strict";

  var KEY = "zuul-status.auto-refresh";
  var PERIOD_MS = 30000;
  var box = document.getElementById("auto-refresh");
  if (!box) {
    return;
  }
  var loadedAt = Date.now();
  var timer = null;

  function remembered() {
    try {
      return window.localStorage.getItem(KEY) === "on";
    } catch (error) {
      return false; // storage disabled: stay off
    }
  }

  function remember(on) {
    try {
      if (on) {
        window.localStorage.setItem(KEY, "on");
      } else {
        window.localStorage.removeItem(KEY);
      }
    } catch (error) {
      // storage disabled: the choice lasts for this page only
    }
  }

  function reload() {
    if (box.checked && !document.hidden) {
      window.location.reload();
    }
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = null;
    if (box.checked && !document.hidden) {
      var wait = Math.max(0, loadedAt + PERIOD_MS - Date.now());
      timer = window.setTimeout(reload, wait);
    }
  }

  box.checked = remembered();
  box.parentNode.hidden = false;
  box.addEventListener("change", function () {
    remember(box.checked);
    loadedAt = Date.now();
    schedule();
  });
  document.addEventListener("visibilitychange", schedule);
  schedule();
})();
