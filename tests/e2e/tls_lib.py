"""TLS for the end-to-end tests of outbound TLS policies (MTA-STS, DANE):
certificates made with the openssl tool (a test CA and its leaves), and an
SMTP sink that offers STARTTLS with one and keeps what it was sent."""
import os
import socket
import ssl
import subprocess
import threading


def openssl(*args):
    """Runs the openssl command line tool; fails the test if it fails."""
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(work):
    """A test CA and a leaf-maker: leaf(name, [dns names]) -> (cert, key)."""
    ca_key, ca = os.path.join(work, "ca.key"), os.path.join(work, "ca.pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", ca_key,
            "-out", ca, "-days", "2", "-subj", "/CN=Peregrine test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(name, names):
        key = os.path.join(work, f"{name}.key")
        csr = os.path.join(work, f"{name}.csr")
        cert = os.path.join(work, f"{name}.pem")
        ext = os.path.join(work, f"{name}.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) +
                    "\nbasicConstraints=CA:FALSE\n"
                    "extendedKeyUsage=serverAuth\n")
        openssl("req", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                "-out", csr, "-subj", f"/CN={names[0]}")
        openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext)
        return cert, key
    return ca, leaf


class TlsSink:
    """SMTP on address:port keeping (recipients, over_tls) per message, a
    thread per connection; offers STARTTLS when given a certificate (and
    its key), for tests of outbound TLS policies."""

    def __init__(self, address, port, cert=None, key=None):
        self.messages = []
        self.data = []  # Each message's bytes, dot-stuffing undone.
        self.context = None
        if cert:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self.session, args=(conn,),
                             daemon=True).start()

    def session(self, conn):
        conn.settimeout(10)
        tls = False
        try:
            f = conn.makefile("rb")
            conn.sendall(b"220 sink ESMTP\r\n")
            rcpts = []
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    offer = b"250-STARTTLS\r\n" if self.context and not tls \
                        else b""
                    conn.sendall(b"250-sink\r\n" + offer + b"250 8BITMIME\r\n")
                elif verb == b"STAR" and self.context and not tls:
                    conn.sendall(b"220 go ahead\r\n")
                    conn = self.context.wrap_socket(conn, server_side=True)
                    f = conn.makefile("rb")
                    tls = True
                elif verb == b"RCPT":
                    text = line.decode()
                    rcpts.append(text[text.index("<") + 1:text.index(">")])
                    conn.sendall(b"250 ok\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    data = b""
                    while True:
                        line = f.readline()
                        if line in (b".\r\n", b""):
                            break
                        data += line[1:] if line.startswith(b"..") else line
                    self.messages.append((rcpts, tls))
                    self.data.append(data)
                    rcpts = []
                    conn.sendall(b"250 2.0.0 kept\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            conn.close()

    def recipients(self):
        return [r for rcpts, _ in self.messages for r in rcpts]

    def stop(self):
        self.stopping = True
        self.sock.close()
