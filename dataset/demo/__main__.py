"""``python -m dataset.demo``: write the demo set (``dataset/demo/__init__.py`` says what it holds)."""
from dataset.demo.writer import main

if __name__ == "__main__":
    main()
