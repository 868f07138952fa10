// The demo page: the element gets its server and token from the query string
// (?server=&token=) or the form, and is put in the page's navigation bar.
const params = new URLSearchParams(location.search);
const form = document.getElementById("controls");

function mount(server, token) {
  const inbox = document.createElement("citelink-inbox");
  if (server) inbox.setAttribute("server", server);
  inbox.setAttribute("token", token);
  document.getElementById("host").replaceChildren(inbox);
}

form.server.value = params.get("server") ?? "";
form.token.value = params.get("token") ?? "";
form.addEventListener("submit", (event) => {
  event.preventDefault();
  mount(form.server.value.trim(), form.token.value.trim());
});
if (form.token.value) mount(form.server.value.trim(), form.token.value);
