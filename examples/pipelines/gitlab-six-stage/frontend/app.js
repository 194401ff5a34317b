"use strict";
fetch("/api/greeting?name=visitor")
  .then((response) => response.json())
  .then((body) => { document.getElementById("greeting").textContent = body.greeting; });
