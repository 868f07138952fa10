// The demo page: the element gets its token from the query string (?token=)
// or the form, and is put in the host page's navigation bar. It has no
// server attribute, so it talks to this page's own origin: a link to the
// demo cannot send the token anywhere else.
const form = document.getElementById("controls");

function mount(token) {
  const inbox = document.createElement("citelink-inbox");
  inbox.setAttribute("token", token);
  document.getElementById("host").replaceChildren(inbox);
}

form.token.value = new URLSearchParams(location.search).get("token") ?? "";
form.addEventListener("submit", (event) => {
  event.preventDefault();
  mount(form.token.value.trim());
});
if (form.token.value) mount(form.token.value.trim());
