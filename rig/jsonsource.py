"""Settings that RIG takes as "a file path or the JSON itself" (EXTRACTORS, PROXY_CONFIG_FILE)."""
import os

from rig import jsonbounds


def load_path_or_json(text):
    """Decode *text* as JSON, or the JSON in the file it names; ValueError saying why not."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")) and os.path.isfile(stripped):
        try:
            with open(stripped, encoding="utf-8") as json_file:
                text = json_file.read()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read {stripped!r}: {error}") from None
    try:
        return jsonbounds.loads(text)
    except ValueError as error:
        raise ValueError(f"neither a readable file nor valid JSON: {error}") from None
