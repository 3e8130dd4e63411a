// `npm run playground`: builds web/ (scripts/build-web.mjs) and serves web/dist on localhost, on
// port 8019 or, if that is taken, any free port; prints the URL.
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";
import { buildWeb } from "./build-web.mjs";

const dist = await buildWeb();
const types = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };
const server = createServer((request, response) => {
  const path = normalize(new URL(request.url ?? "/", "http://localhost").pathname).replace(/^\/+/, "") || "index.html";
  const file = join(dist, path);
  if (path.startsWith("..") || !existsSync(file) || !(extname(file) in types)) {
    response.statusCode = 404;
    response.end("not found");
    return;
  }
  response.setHeader("content-type", types[extname(file)]);
  response.end(readFileSync(file));
});
server.on("error", (error) => {
  if (error.code !== "EADDRINUSE") throw error;
  server.listen(0, "127.0.0.1"); // 8019 is taken: any free port
});
server.on("listening", () => console.log(`MoBA playground: http://127.0.0.1:${server.address().port}/  (Ctrl-C stops it)`));
server.listen(8019, "127.0.0.1");
