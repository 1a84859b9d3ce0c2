"""Running model-written code: the program a response makes (``programs``) and the
sandbox it runs in (``sandbox``). Used by the code techniques and the code
benchmarks' scorer alike."""
