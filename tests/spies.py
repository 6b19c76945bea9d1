"""Test helper: record what a text encoder is asked to encode."""


def record_encode_calls(monkeypatch, encoder) -> list[list[str]]:
    """Wrap `encoder.encode` so every call's texts are appended to the returned list."""
    calls: list[list[str]] = []
    original = encoder.encode

    def encode(texts):
        calls.append(list(texts))
        return original(texts)

    monkeypatch.setattr(encoder, "encode", encode)
    return calls
