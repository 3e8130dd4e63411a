// `npm run playground`: builds web/ (scripts/build-web.mjs) and serves web/dist on localhost, on
// port 8019 or, if that is taken, any free port; prints the URL.
import { buildWeb, serveWeb } from "./build-web.mjs";

const dist = await buildWeb();
const server = await serveWeb(dist, 8019).catch((error) => {
  if (error.code !== "EADDRINUSE") throw error;
  return serveWeb(dist, 0); // 8019 is taken: any free port
});
console.log(`MoBA playground: http://127.0.0.1:${server.address().port}/  (Ctrl-C stops it)`);
