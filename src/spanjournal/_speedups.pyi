from collections.abc import Buffer

class Table:
    """The states-only fold of journal lines, in C (see ``_speedups.c``)."""

    def feed(self, block: Buffer, start: int, end: int, /) -> tuple[int, int]: ...
    def dispatch(
        self, chunk_id: str, span_id: str, host: str | None, pid: int | None, proc_start: int | None, /
    ) -> None: ...
    def complete(self, chunk_id: str, span_id: str, success: bool, /) -> None: ...
    def latest_span(self, chunk_id: str, /) -> str | None: ...
    def summary(
        self,
    ) -> tuple[
        list[str],
        list[tuple[str, str, str | None, int | None, int | None]],
        list[str],
        list[str],
        list[tuple[str, str]],
    ]: ...
    def chunk_count(self) -> int: ...
