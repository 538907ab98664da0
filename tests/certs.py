"""Self-signed test certificates, written to a test's tmp_path (nothing checked in)."""
import datetime
import ipaddress

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PASSWORD = "correct horse"


@attrs.frozen
class CertFiles:
    certfile: str
    keyfile: str
    encrypted_keyfile: str  # the same key, encrypted (with PASSWORD by default)
    pem: bytes  # the certificate, for the client's trust root


def make_certificate(directory, name="localhost", key_format="pkcs8", password=PASSWORD):
    """A certificate for *name* and 127.0.0.1, its key, and the key encrypted with *password*.

    *key_format* ``pkcs8`` gives ``BEGIN ENCRYPTED PRIVATE KEY``; ``traditional``
    gives OpenSSL's ``Proc-Type: 4,ENCRYPTED`` header form.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    private_format = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
    }[key_format]
    paths = {}
    for label, data in (
        ("cert.pem", pem),
        ("key.pem", key.private_bytes(serialization.Encoding.PEM, private_format,
                                      serialization.NoEncryption())),
        ("key-encrypted.pem", key.private_bytes(
            serialization.Encoding.PEM, private_format,
            serialization.BestAvailableEncryption(password.encode()))),
    ):
        path = directory / f"{name}-{label}"
        path.write_bytes(data)
        paths[label] = str(path)
    return CertFiles(paths["cert.pem"], paths["key.pem"], paths["key-encrypted.pem"], pem)
