// Loaded before the styles, so the page never flashes the wrong theme.
(function () {
  var saved = null;
  try { saved = localStorage.getItem("parley.theme"); } catch (e) { /* storage disabled */ }
  var dark = saved ? saved === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
})();
