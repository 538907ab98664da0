"""TLS for the HTTPS listeners (spec Part B 1.1): PEM files in, server options out.

The files are read at start only: once when the settings are checked, so a bad
certificate, key or password stops the daemon with one line, and once when
the service tree is built. Nothing here runs on the reactor. Ciphers and
protocol versions are Twisted's ``CertificateOptions`` defaults (TLS 1.2 and
up, a strong cipher list, server preference, no compression). ALPN offers
HTTP/2 first, then HTTP/1.1 (:mod:`rig.web.h2`).

Each loader raises ``ValueError`` with a message that names the file but not
the setting; the caller prefixes the setting's name.
"""
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOFactory

HTTP_PROTOCOLS = (b"h2", b"http/1.1")  # offered by ALPN, best first
_PUBLIC = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path):
    try:
        with open(path, "rb") as pem_file:
            return pem_file.read()
    except OSError as error:
        raise ValueError(f"cannot read {path!r}: {error.strerror or error}") from None


def load_certificates(path):
    """The server certificate first, then any chain certificates that follow it."""
    data = _read(path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"no PEM certificate in {path!r}") from None
    return certificates


def load_private_key(path, password=None):
    """The PEM key, decrypted with *password* when it is encrypted.

    A password given for a key that is not encrypted is not needed, and
    harmless, so it is ignored rather than fatal.
    """
    return _private_key(_read(path), password.encode("utf-8") if password else None, path)


def _private_key(data, secret, path):
    try:
        return serialization.load_pem_private_key(data, secret)
    except TypeError:  # encrypted without a password, or a password for a plain key
        if secret is None:
            raise ValueError(f"the key in {path!r} is encrypted; set HTTPS_KEYFILE_PASS") from None
        return _private_key(data, None, path)
    except ValueError:
        if secret is not None and b"ENCRYPTED" in data:
            raise ValueError(
                f"cannot decrypt the key in {path!r}: wrong HTTPS_KEYFILE_PASS") from None
        raise ValueError(f"no readable PEM private key in {path!r}") from None
    except Exception as error:  # an unsupported key type, for one
        raise ValueError(f"cannot load the key in {path!r}: {error}") from None


def server_options(certificates, key, client_ca=None, protocols=HTTP_PROTOCOLS):
    """``CertificateOptions`` with the context built now, so a mismatch fails at start;
    *protocols* are the ALPN protocol names offered, best first."""
    leaf, *chain = certificates
    if leaf.public_key().public_bytes(*_PUBLIC) != key.public_key().public_bytes(*_PUBLIC):
        raise ValueError("the private key does not belong to the certificate")
    try:
        # pyOpenSSL (>= 24.3) takes cryptography's objects, and deprecates its own.
        options = CertificateOptions(privateKey=key, certificate=leaf,
                                     extraCertChain=chain or None, trustRoot=client_ca,
                                     acceptableProtocols=list(protocols) or None)
        options.getContext()
    except (SSL.Error, TypeError, ValueError) as error:
        raise ValueError(f"unusable certificate or key: {error}") from None
    return options


def load_server_options(certfile, keyfile, password=None, client_ca=None):
    """Server options from the two PEM files (used at build time, after the settings check).

    With *client_ca* (a PEM file of CA certificates) every client must present a
    certificate that chains to one of them, or the handshake fails (mutual TLS).
    """
    return server_options(load_certificates(certfile), load_private_key(keyfile, password),
                          client_ca=load_trust_root(client_ca) if client_ca else None)


def load_trust_root(path):
    """The CA certificates in a PEM file, as a trust root for verifying peers."""
    from twisted.internet.ssl import Certificate, trustRootFromCertificates

    return trustRootFromCertificates([
        Certificate.loadPEM(certificate.public_bytes(serialization.Encoding.PEM))
        for certificate in load_certificates(path)])


def tls_factory(options, factory, reactor):
    """Serve *factory* over TLS on any stream endpoint (tcp, tcp6, unix, systemd)."""
    return TLSMemoryBIOFactory(options, False, factory, clock=reactor)
