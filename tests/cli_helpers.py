"""Helpers shared by the command-line tests."""


def error_line(capsys) -> str:
    """The one line ``htnet: error: ...`` on stderr (and nothing else there)."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("htnet: error: "), err
    return lines[0]
