/* deconvviz index: which features, of every layer, detect a class (issue 20).
   The labels sit in the page as JSON (browsers refuse fetch() of local files). */
(function () {
  "use strict";
  // [layer folder, layer title, feature, class it detects, AUROC]
  var found = JSON.parse(document.getElementById("label-data").textContent);
  var box = document.getElementById("class-search");
  var list = document.getElementById("hits");
  var count = document.getElementById("hit-count");
  var SHOWN = 200;

  function pad(f) {
    var s = String(f);
    while (s.length < 3) { s = "0" + s; }
    return s;
  }

  function render() {
    var q = box.value.trim().toLowerCase();
    list.textContent = "";
    if (!q) { count.textContent = ""; return; }
    var hits = found.filter(function (x) { return x[3].toLowerCase().indexOf(q) >= 0; });
    hits.sort(function (a, b) { return (b[4] - a[4]) || 0; });  // stable: layer order, feature
    count.textContent = hits.length ? hits.length + " feature" + (hits.length > 1 ? "s" : "") +
      " detect \u201c" + box.value.trim() + "\u201d, strongest (highest AUROC) first" +
      (hits.length > SHOWN ? "; the first " + SHOWN + " listed" : "") :
      "no feature detects \u201c" + box.value.trim() + "\u201d";
    hits.slice(0, SHOWN).forEach(function (x) {
      var li = document.createElement("li"), a = document.createElement("a");
      a.href = encodeURIComponent(x[0]) + "/feature" + pad(x[2]) + ".html";
      a.textContent = x[1] + ", feature " + x[2];
      li.appendChild(a);
      li.appendChild(document.createTextNode(": " + x[3] + " (AUROC " + x[4].toFixed(3) + ")"));
      list.appendChild(li);
    });
  }

  box.addEventListener("input", render);
  render();
}());
