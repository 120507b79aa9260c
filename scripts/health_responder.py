"""A node's GET /iicp/health over HTTPS with a self-signed certificate, for conformance runs.

Each request is appended to a hit log, so the caller can prove the directory really dialed back.
Usage: health_responder.py PORT CERT KEY HITLOG
"""
import http.server
import json
import ssl
import sys


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(sys.argv[4], "a") as log:
            log.write(self.path + "\n")
        body = json.dumps({"status": "ok", "node_id": "conformance-fixture", "load": 0,
                           "active_jobs": 0, "models": ["fixture-model"]}).encode()
        self.send_response(200 if self.path.endswith("/iicp/health") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Health)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
