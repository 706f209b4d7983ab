/* deconvviz layer page: pages of feature tiles, sorted, filtered, jumped to.
   The data sit in the page as JSON (browsers refuse fetch() of local files). */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("layer-data").textContent);
  // data.features: [feature (channel number), strongest activation, never fires (0/1), class of its top image,
  //                 class it detects ("" none), that class's AUROC, firing rate (-1: absent)]
  var feats = data.features;
  var state = { sort: "feature", hide: false, page: 0, hit: -1, q: "" };
  var search = document.getElementById("class-search");
  var grid = document.getElementById("grid");
  var sortSel = document.getElementById("sort");
  var hideBox = document.getElementById("hide-dead");
  var range = document.getElementById("range");
  var prevBtn = document.getElementById("prev");
  var nextBtn = document.getElementById("next");
  var jumpForm = document.getElementById("jump-form");
  var jumpBox = document.getElementById("jump");

  function pad(f) {
    var s = String(f);
    while (s.length < 3) { s = "0" + s; }
    return s;
  }

  function listed() {
    var q = state.q.trim().toLowerCase();
    var list = feats.filter(function (x) {
      return !(state.hide && x[2]) && (!q || (x[4] && x[4].toLowerCase().indexOf(q) >= 0));
    });
    var col = { activation: 1, auroc: 5, firing: 6 }[state.sort];
    if (col) {
      list = list.slice().sort(function (a, b) { return (b[col] - a[col]) || (a[0] - b[0]); });
    }
    return list;
  }

  function pages(n) { return Math.max(1, Math.ceil(n / data.pageSize)); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function img(src, alt, w, h, px) {
    var i = el("img", px ? "px" : "");
    i.loading = "lazy";
    i.decoding = "async";
    i.width = w;
    i.height = h;
    i.alt = alt;
    i.src = src;
    return i;
  }

  function tile(x) {
    var f = x[0], base = data.dir + "/";
    var a = el("a", "tile" + (x[2] ? " dead" : "") + (f === state.hit ? " hit" : ""));
    a.href = base + "feature" + pad(f) + ".html";
    a.id = "f" + f;
    a.setAttribute("data-feature", String(f));
    var pair = el("div", "pair");
    if (x[2]) {
      var never = el("div", "never", "never fires");
      never.style.width = (2 * data.tileW + 3) + "px";
      never.style.height = data.tileH + "px";
      pair.appendChild(never);
      a.title = "feature " + f + " never fires: its largest activation over the " +
        data.images + " images is " + x[1];
    } else {
      pair.appendChild(img(base + data.tiles + "/feature" + pad(f) + "_1_projection.png",
        "feature " + f + ": strongest projection", data.tileW, data.tileH, data.pixelated));
      pair.appendChild(img(base + data.tiles + "/feature" + pad(f) + "_1_patch.png",
        "feature " + f + ": its image patch", data.tileW, data.tileH, data.pixelated));
      a.title = "feature " + f + ": strongest activation " + x[1] + (x[3] ? " (" + x[3] + ")" : "");
    }
    a.appendChild(pair);
    var cap = el("div", "cap");
    cap.appendChild(el("b", "", "feature " + f));
    cap.appendChild(el("span", "", x[2] ? "never fires" : "act " + x[1].toPrecision(3)));
    a.appendChild(cap);
    var track = el("div", "track"), fill = el("div", "fill");
    var frac = data.maxAct > 0 ? Math.max(0, x[1]) / data.maxAct : 0;
    fill.style.width = (100 * frac) + "%";
    // The gradient spans the whole track, so the bar's end shows the value's colour.
    fill.style.backgroundSize = (frac > 0 ? 100 / frac : 100) + "% 100%";
    track.appendChild(fill);
    a.appendChild(track);
    a.appendChild(el("div", "cls", x[2] || !x[3] ? "\u00a0" : "top image: " + x[3]));
    if (data.statistics) {
      // The same caption as the notebook's: the class and its AUROC, or "no class".
      var lbl = el("div", "lbl" + (x[4] ? "" : " none"),
                   x[4] ? x[4] + " " + x[5].toFixed(2) : "no class");
      lbl.title = x[4] ? "detects " + x[4] + " (AUROC " + x[5].toFixed(3) + ")" :
        "no class: no AUROC is significant";
      a.appendChild(lbl);
    }
    return a;
  }

  function remember() {
    var h = "#page=" + (state.page + 1) + "&sort=" + state.sort + (state.hide ? "&hide=1" : "") +
      (state.q ? "&q=" + encodeURIComponent(state.q) : "");
    if (state.hit >= 0) { h += "&f=" + state.hit; }
    try { history.replaceState(null, "", h); } catch (e) { /* some browsers on file:// */ }
  }

  function render() {
    var list = listed(), n = list.length, last = pages(n) - 1;
    state.page = Math.min(Math.max(0, state.page), last);
    var start = state.page * data.pageSize, stop = Math.min(n, start + data.pageSize);
    var frag = document.createDocumentFragment();
    for (var i = start; i < stop; i++) { frag.appendChild(tile(list[i])); }
    grid.textContent = "";
    grid.appendChild(frag);
    range.textContent = n ? "features " + (start + 1) + "\u2013" + stop + " of " + n +
      " (page " + (state.page + 1) + " of " + (last + 1) + ")" :
      (state.q ? "no feature detects \u201c" + state.q + "\u201d" : "no features to show");
    if (search.value !== state.q) { search.value = state.q; }
    prevBtn.disabled = state.page <= 0;
    nextBtn.disabled = state.page >= last;
    sortSel.value = state.sort;
    hideBox.checked = state.hide;
    remember();
  }

  function jump(f) {
    var list = listed(), at = -1;
    for (var i = 0; i < list.length; i++) { if (list[i][0] === f) { at = i; break; } }
    if (at < 0 && state.hide) {  // a feature that never fires is hidden: show it again
      state.hide = false;
      list = listed();
      for (var j = 0; j < list.length; j++) { if (list[j][0] === f) { at = j; break; } }
    }
    if (at < 0) { return false; }
    state.hit = f;
    state.page = Math.floor(at / data.pageSize);
    render();
    var t = document.getElementById("f" + f);
    if (t) { t.scrollIntoView({ block: "center" }); t.focus({ preventScroll: true }); }
    return true;
  }

  function fromHash() {
    var h = (location.hash || "").replace(/^#/, ""), want = -1;
    if (/^f?\d+$/.test(h)) { want = parseInt(h.replace("f", ""), 10); }
    h.split("&").forEach(function (kv) {
      var p = kv.split("=");
      if (p[0] === "page") { state.page = (parseInt(p[1], 10) || 1) - 1; }
      if (p[0] === "sort" && ["feature", "activation", "auroc", "firing"].indexOf(p[1]) >= 0 &&
          (data.statistics || p[1] === "feature" || p[1] === "activation")) { state.sort = p[1]; }
      if (p[0] === "q" && data.statistics) { state.q = decodeURIComponent(p[1] || ""); }
      if (p[0] === "hide") { state.hide = p[1] === "1"; }
      if (p[0] === "f") { want = parseInt(p[1], 10); }
    });
    if (!(want >= 0 && jump(want))) { render(); }
  }

  sortSel.addEventListener("change", function () { state.sort = sortSel.value; state.page = 0; render(); });
  hideBox.addEventListener("change", function () { state.hide = hideBox.checked; state.page = 0; render(); });
  search.addEventListener("input", function () { state.q = search.value; state.page = 0; render(); });
  prevBtn.addEventListener("click", function () { state.page -= 1; render(); });
  nextBtn.addEventListener("click", function () { state.page += 1; render(); });
  jumpForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var f = parseInt(jumpBox.value, 10);
    if (!(f >= 0) || !feats.some(function (x) { return x[0] === f; }) || !jump(f)) {
      jumpBox.setCustomValidity(data.numbering);
      jumpBox.reportValidity();
    } else {
      jumpBox.setCustomValidity("");
    }
  });
  jumpBox.addEventListener("input", function () { jumpBox.setCustomValidity(""); });
  document.addEventListener("keydown", function (ev) {
    var t = ev.target && ev.target.tagName;
    if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA" || ev.altKey || ev.ctrlKey || ev.metaKey) { return; }
    if (ev.key === "ArrowRight" && !nextBtn.disabled) { state.page += 1; render(); window.scrollTo(0, 0); ev.preventDefault(); }
    if (ev.key === "ArrowLeft" && !prevBtn.disabled) { state.page -= 1; render(); window.scrollTo(0, 0); ev.preventDefault(); }
  });
  window.addEventListener("hashchange", fromHash);
  fromHash();
}());
