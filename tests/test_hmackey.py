"""HmacKey says what ``hmac.digest`` says, for every key length and algorithm used."""
import hmac

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rig.hmackey import HmacKey


@settings(max_examples=300, derandomize=True)
@given(key=st.binary(max_size=300), message=st.binary(max_size=300),
       algorithm=st.sampled_from(["sha256", "sha384", "sha512"]))
@example(key=b"", message=b"", algorithm="sha256")
@example(key=b"k" * 64, message=b"m", algorithm="sha256")  # exactly one block
@example(key=b"k" * 65, message=b"m", algorithm="sha256")  # longer: hashed first
@example(key=b"k" * 129, message=b"m", algorithm="sha512")
def test_the_digest_is_hmacs(key, message, algorithm):
    made_once = HmacKey(key, algorithm)
    assert made_once.digest(message) == hmac.digest(key, message, algorithm)
    assert made_once.digest(message) == hmac.digest(key, message, algorithm)  # reusable
