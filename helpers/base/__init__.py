"""What every layer may import, ``dataset/`` included: the errors a user fixes and the parser every command
uses. It imports only the standard library, so that it sits below ``dataset/`` and the rest of ``helpers/``
(``tests/test_layers.py``)."""
