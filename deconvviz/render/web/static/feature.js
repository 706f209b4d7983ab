/* deconvviz feature page: arrow keys step between features, up goes back to the layer. */
(function () {
  "use strict";
  document.addEventListener("keydown", function (ev) {
    var t = ev.target && ev.target.tagName;
    if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA" || ev.altKey || ev.ctrlKey || ev.metaKey) { return; }
    var id = { ArrowLeft: "prev", ArrowRight: "next", ArrowUp: "up", Escape: "up" }[ev.key];
    var a = id && document.getElementById(id);
    if (a && a.getAttribute("href")) { ev.preventDefault(); location.href = a.href; }
  });
}());
