// Starts ReDoc on the API's OpenAPI document (a file of ours: the page allows no inline script).
(function () {
  var root = document.getElementById("redoc");
  Redoc.init(root.getAttribute("data-openapi-url"), { hideDownloadButton: false }, root);
})();
