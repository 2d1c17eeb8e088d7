#!/usr/bin/env python3
"""Minimal Neutron stand-in: every list returns empty. Nova (networks=none) only
needs GET /v2.0/ports?device_id=... (delete, info-cache heal, evacuate)."""
import json, sys, re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def _send(self, code, body):
        b = json.dumps(body).encode()
        self.send_response(code); self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def do_GET(self):
        p = self.path.split('?')[0].rstrip('/')
        if p in ('', '/'):
            return self._send(200, {"versions": [{"id": "v2.0", "status": "CURRENT",
                   "links": [{"rel": "self", "href": "http://127.0.0.1:9696/v2.0/"}]}]})
        m = re.match(r'^/v2\.0/([a-z_-]+?)(\.json)?$', p)
        if m:
            return self._send(200, {m.group(1).replace('-', '_'): []})
        self._send(404, {"NeutronError": {"type": "NotFound", "message": p}})
    do_DELETE = do_GET
    def do_PUT(self): self._send(404, {})
    do_POST = do_PUT
    def log_message(self, fmt, *a): sys.stderr.write("neutron-stub: " + fmt % a + "\n")
ThreadingHTTPServer((sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 9696), H).serve_forever()
