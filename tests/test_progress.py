import io

from hellolondon.progress import LOG_INTERVAL_S, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_into_a_file_or_pipe_is_drawn_every_30_seconds_not_ten_times_a_second():
    log = io.StringIO()
    with progress_bar(total=10_000, file=log) as bar:
        assert bar.mininterval == LOG_INTERVAL_S == 30.0
        for _ in range(10_000):
            bar.update(1)
    assert log.getvalue().count("\r") <= 3  # the first draw and the final one


def test_a_bar_on_a_terminal_keeps_tqdms_rate_and_explicit_options_win():
    assert progress_bar(total=1, file=Terminal()).mininterval == 0.1
    assert progress_bar(total=1, file=io.StringIO(), mininterval=2).mininterval == 2
