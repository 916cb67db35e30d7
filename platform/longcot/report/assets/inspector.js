// The trace inspector: a list of records, search by id or text, and one record drawn at a time.
// Segments are drawn as one span each (offsets into the original thought), so long traces stay fast.
(function () {
  const records = JSON.parse(document.getElementById("records").textContent);
  const list = document.getElementById("list");
  const view = document.getElementById("view");
  const search = document.getElementById("search");
  let shown = [];

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, v);
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function renderList(query) {
    const q = (query || "").toLowerCase();
    list.textContent = "";
    shown = records.filter(r => !q || r.id.toLowerCase().includes(q) ||
      r.problem.toLowerCase().includes(q) || r.thought.toLowerCase().includes(q));
    shown.slice(0, 300).forEach((r, i) => {
      const li = el("li", {"data-id": r.id}, `${r.id} · ${r.chars.toLocaleString()} chars · ${r.verdict || ""}`);
      li.addEventListener("click", () => show(r));
      list.appendChild(li);
    });
  }

  function badge(text, cls) { return el("span", {class: "badge " + (cls || "")}, text); }

  function renderSegments(r, box) {
    let pos = 0;
    const segs = r.segments.slice().sort((a, b) => a.start - b.start);
    for (const s of segs) {
      if (s.start > pos) box.appendChild(document.createTextNode(r.thought.slice(pos, s.start)));
      const span = el("span", {
        class: "seg seg-" + s.kind + (s.kept ? "" : " pruned"),
        "data-kind": s.kind, "data-kept": String(s.kept), "data-label": s.label,
        "data-approach": s.approach, "data-cluster": s.cluster, title: s.reason || ""
      });
      const head = [];
      if (s.approach !== null && s.approach !== undefined) head.push(badge("approach " + s.approach));
      if (s.label) head.push(badge(s.label, s.label));
      if (s.cluster !== null && s.cluster !== undefined) head.push(badge("cluster " + s.cluster));
      if (!s.kept && s.reason) head.push(badge(s.reason, "reason"));
      head.forEach(b => span.appendChild(b));
      span.appendChild(document.createTextNode(r.thought.slice(s.start, s.end)));
      box.appendChild(span);
      pos = Math.max(pos, s.end);
    }
    if (pos < r.thought.length) box.appendChild(document.createTextNode(r.thought.slice(pos)));
  }

  function renderDiff(r, box) {
    for (const [op, text] of r.diff) {
      if (op === "=") box.appendChild(document.createTextNode(text));
      else box.appendChild(el("span", {class: op === "-" ? "diff-del" : "diff-ins"}, text));
    }
  }

  function show(r) {
    for (const li of list.children) li.classList.toggle("active", li.dataset.id === r.id);
    view.textContent = "";
    view.appendChild(el("h2", {id: "record-id"}, r.id));
    view.appendChild(el("p", {class: "meta"},
      `${r.source || ""} · verdict ${r.verdict || "-"} · stages ${r.stages.join(" → ")}` + (r.skip ? ` · skipped: ${r.skip}` : "")));
    view.appendChild(el("p", {}, r.problem));
    if (r.gold) {
      const g = r.gold;
      const pct = x => (100 * x).toFixed(1) + "%";
      view.appendChild(el("p", {class: "gold", id: "gold"},
        `against gold ${g.id}: exploration cut ${pct(g.exploration_cut)}, over-cut ${pct(g.over_cut)}, ` +
        `under-cut ${pct(g.under_cut)}, kept share ${g.kept_share.toFixed(3)} (gold ${g.gold_kept_share.toFixed(3)}), ` +
        `boundary error ${g.boundary_error === null ? "-" : g.boundary_error} paragraph(s)`));
    }
    for (const d of r.dangling || []) {
      view.appendChild(el("p", {class: "dangling"}, `dangling reference in ${d.where}: "${d.phrase}" points at ${d.points_at}, which was dropped`));
    }
    for (const line of r.resolved || []) view.appendChild(el("p", {class: "meta resolved"}, "reference kept whole: " + line));
    if (r.rewrite) {
      view.appendChild(el("p", {class: "meta"}, `rewrite: ${r.rewrite.edited} of ${r.rewrite.seams} seam(s) edited` +
        (r.rewrite.fallback ? `; kept verbatim: ${r.rewrite.fallback}` : `, ${(100 * r.rewrite.changed_share).toFixed(1)}% changed`)));
    }
    const box = el("div", {class: "thought", id: "thought"});
    if (r.diff) { box.dataset.mode = "diff"; renderDiff(r, box); }
    else if (r.segments.length) { box.dataset.mode = "segments"; renderSegments(r, box); }
    else { box.dataset.mode = "plain"; box.textContent = r.thought; }
    view.appendChild(box);
    history.replaceState(null, "", "#" + r.id);
  }

  search.addEventListener("input", () => renderList(search.value));
  renderList("");
  const wanted = location.hash.slice(1);
  const first = records.find(r => r.id === wanted) || records[0];
  if (first) show(first);
})();
