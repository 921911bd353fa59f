// The on-site board: follows the visits' event stream and edits the table in place.
// It never moves the keyboard focus and never writes HTML (names are set as text).
"use strict";
(function () {
  var table = document.getElementById("board");
  if (!table || !window.EventSource) { return; }
  var body = table.tBodies[0];
  var count = document.getElementById("count");
  var live = document.getElementById("live");
  var clock = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit", minute: "2-digit", timeZone: table.dataset.tz || undefined
  });

  function row(id) { return body.querySelector('tr[data-visit="' + String(Number(id)) + '"]'); }
  function recount() { if (count) { count.textContent = String(body.rows.length); } }
  function cell(tr, text) { var td = document.createElement("td"); td.textContent = text || ""; tr.appendChild(td); }

  function arrival(e) {
    var d = JSON.parse(e.data);
    if (row(d.visit_id)) { return; }
    var tr = document.createElement("tr");
    tr.dataset.visit = String(Number(d.visit_id));
    cell(tr, clock.format(new Date(d.at)));
    cell(tr, d.name); cell(tr, d.company); cell(tr, d.host);
    body.appendChild(tr);
    recount();
  }

  function departure(e) {
    var d = JSON.parse(e.data);
    var tr = row(d.visit_id);
    if (tr) { tr.remove(); recount(); }
  }

  var source = new EventSource(table.dataset.stream);
  source.addEventListener("arrival", arrival);
  source.addEventListener("departure", departure);
  source.onopen = function () { if (live) { live.dataset.state = "open"; } };
  source.onerror = function () { if (live) { live.dataset.state = "reconnecting"; } };
})();
