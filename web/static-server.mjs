// The static HTTP server of every real-browser script here (web/e2e.mjs, web/e2e-package.mjs,
// tests/bench/browser_vs_native.mjs): files from one folder on 127.0.0.1 (a page must come from a server, not
// file://, for workers and wasm), and model files with what the page's resumable download needs (Range
// `bytes=N-`, ETag and If-Range) plus a deliberately cut response to test the resume.
import { createServer } from 'node:http';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { extname, join, resolve, sep } from 'node:path';

const MIME = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png', '.jpg': 'image/jpeg' };

/** Sends `file`, or 404 when there is none. A `Range: bytes=N-` request gets 206 from byte N unless its
 *  If-Range names another version (then the whole file, as a real server does after the file changed).
 *  `cutAfter` > 0: the connection drops after that many bytes of the body (once they have had time to reach
 *  the page: an immediate reset can discard them in flight, and then there is nothing to resume from).
 *  `onBytes(n)` is told of every n bytes of the body sent. */
export function sendFile(req, res, file, { cutAfter = 0, onBytes = () => {} } = {}) {
  if (!file || !existsSync(file) || statSync(file).isDirectory()) { res.writeHead(404); res.end(); return; }
  const st = statSync(file);
  const etag = `"${st.size}-${Math.floor(st.mtimeMs)}"`;
  let start = 0, status = 200;
  const range = /^bytes=(\d+)-$/.exec(req.headers.range || '');
  if (range && Number(range[1]) < st.size && (!req.headers['if-range'] || req.headers['if-range'] === etag)) {
    start = Number(range[1]); status = 206;
    res.setHeader('Content-Range', `bytes ${start}-${st.size - 1}/${st.size}`);
  }
  res.writeHead(status, { 'Content-Type': MIME[extname(file)] || 'application/octet-stream',
    'Content-Length': st.size - start, 'ETag': etag, 'Accept-Ranges': 'bytes', 'Cache-Control': 'no-store' });
  if (req.method === 'HEAD' || st.size === start) { res.end(); return; }
  const stream = createReadStream(file, { start });
  let sent = 0;
  stream.on('data', (chunk) => {
    if (cutAfter && sent + chunk.length > cutAfter) {
      const part = chunk.subarray(0, cutAfter - sent);
      res.write(part); onBytes(part.length); sent += part.length;
      stream.destroy(); setTimeout(() => res.socket.destroy(), 500); return;
    }
    sent += chunk.length; onBytes(chunk.length);
    if (!res.write(chunk)) { stream.pause(); res.once('drain', () => stream.resume()); }
  });
  stream.on('error', () => res.destroy());
  stream.on('end', () => res.end());
}

/** Starts the server on a free port of 127.0.0.1: `route(req, res, url)` answers the paths it knows (and
 *  returns true); any other path is a file under `root` (`/` is its index.html; nothing outside `root`).
 *  Resolves to `{ server, base }`, base being `http://127.0.0.1:PORT/`. */
export async function startServer(root, route = () => false) {
  const top = resolve(root);
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (route(req, res, url)) return;
    const file = join(top, url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname));
    sendFile(req, res, file.startsWith(top + sep) ? file : '');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, base: `http://127.0.0.1:${server.address().port}/` };
}

/** A model file of `dir` named by the rest of the path after `prefix` (`/models/NAME`), or '' (no
 *  sub-folders, nothing outside `dir`). */
export function modelPath(dir, url, prefix = '/models/') {
  const name = decodeURIComponent(url.pathname.slice(prefix.length));
  return name && !name.includes('/') && !name.includes('\\') ? join(dir, name) : '';
}
