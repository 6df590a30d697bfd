"""The kit's checks catch what they claim to: each rule broken once, on made-up records.

A fault-injection kit whose checks never fail proves nothing; these build the
records a broken server would leave (no processes, no network) and expect the
rule's evidence in the problems.
"""

from typing import Any, cast

from chaos.checks import check_history
from chaos.http_api import History
from chaos.ledger import Ack, Attempt, Ledger, PublishRecord
from chaos.processes import ServerProcess
from chaos.reader import Reader, Seen, Welcome
from chaos.reader_rules import check_reader
from chaos.room import Room

E1, E2 = "epoch-1", "epoch-2"


def message(seq: int, mid: str) -> dict[str, Any]:
    return {"type": "message", "seq": seq, "id": mid, "data": {"id": mid}}


def acked(ledger: Ledger, mid: str, epoch: str | None, seq: int) -> PublishRecord:
    record = PublishRecord(mid, "w0", {"id": mid})
    record.attempts.append(Attempt(f"{mid}#1", "ws:p0#1", 0.0, "acked"))
    record.acks.append(Ack(epoch, seq, False, 0.0))
    ledger.record(record)
    return record


def refused(ledger: Ledger, mid: str) -> None:
    record = PublishRecord(mid, "w0", {"id": mid})
    record.attempts.append(Attempt(f"{mid}#1", "ws:p0#1", 0.0, "unavailable"))
    ledger.record(record)


def problems_of(ledger: Ledger, history: History, loses_data: bool = False) -> str:
    epochs = {epoch for epoch, _ in ledger.seen} | {history.epoch}
    return "\n".join(check_history(ledger, history, epochs, loses_data).problems)


def test_a_whole_history_passes() -> None:
    ledger = Ledger()
    acked(ledger, "a", E1, 1)
    acked(ledger, "b", E1, 2)
    counts = check_history(ledger, History(E1, 2, [message(1, "a"), message(2, "b")]), {E1}, False)
    assert (counts.acked, counts.lost, counts.duplicated, counts.problems) == (2, 0, 0, [])


def test_an_acknowledged_message_missing_from_history_is_lost() -> None:
    ledger = Ledger()
    acked(ledger, "a", E1, 1)
    acked(ledger, "b", E1, 2)
    counts = check_history(ledger, History(E1, 2, [message(1, "a")]), {E1}, False)
    assert counts.lost == 1
    assert "acknowledged but not in history: b" in counts.problems[0]


def test_one_acknowledged_in_a_lost_epoch_is_epoch_lost_not_lost() -> None:
    ledger = Ledger()
    acked(ledger, "a", E1, 1)
    acked(ledger, "b", E2, 1)
    counts = check_history(ledger, History(E2, 1, [message(1, "b")]), {E1, E2}, True)
    assert (counts.lost, counts.epoch_lost, counts.problems) == (0, 1, [])


def test_an_epoch_change_without_data_loss_is_a_problem() -> None:
    ledger = Ledger()
    acked(ledger, "b", E2, 1)
    ledger.observe("r0", E1, 1, "a")
    assert "the epoch changed although the backend kept its data" in problems_of(
        ledger, History(E2, 1, [message(1, "b")])
    )


def test_an_id_twice_in_history_is_duplicated() -> None:
    ledger = Ledger()
    acked(ledger, "a", E1, 1)
    counts = check_history(ledger, History(E1, 2, [message(1, "a"), message(2, "a")]), {E1}, False)
    assert counts.duplicated == 1
    assert "published more than once: a at seqs [1, 2]" in counts.problems[0]


def test_a_refused_publish_in_history_is_a_problem() -> None:
    ledger = Ledger()
    refused(ledger, "a")
    assert "answered unavailable, yet published" in problems_of(
        ledger, History(E1, 1, [message(1, "a")])
    )


def test_one_seq_naming_two_messages_is_a_problem() -> None:
    ledger = Ledger()
    acked(ledger, "a", E1, 1)
    ledger.observe("r0", E1, 1, "other")
    assert "one seq names two messages: epoch epoch-1 seq 1" in problems_of(
        ledger, History(E1, 1, [message(1, "a")])
    )


def reader(*log: Welcome | Seen) -> Reader:
    room = Room("item", cast(list[ServerProcess], [object()]), Ledger(), 30.0)
    made = Reader("r0", "token", room, home=0)
    made.log.extend(log)
    return made


def welcome(epoch: str, seq: int, recovered: bool = True) -> Welcome:
    return Welcome(0.0, 1, 0, epoch, seq, recovered, 0, None)


def seen(epoch: str, seq: int, mid: str = "") -> Seen:
    return Seen(0.0, 1, epoch, seq, mid or f"m{seq}", True, False)


HISTORY = History(E1, 3, [message(1, "m1"), message(2, "m2"), message(3, "m3")])


def test_a_reader_that_saw_everything_in_order_passes() -> None:
    assert (
        check_reader(reader(welcome(E1, 0), seen(E1, 1), seen(E1, 2), seen(E1, 3)), HISTORY) == []
    )


def test_a_live_gap_is_a_problem() -> None:
    problems = check_reader(reader(welcome(E1, 0), seen(E1, 1), seen(E1, 3)), HISTORY)
    assert any("missed seqs 2..2" in p for p in problems)
    assert any("never saw 1 message(s)" in p for p in problems)


def test_a_redelivery_is_a_problem() -> None:
    log = (welcome(E1, 0), seen(E1, 1), seen(E1, 2), seen(E1, 2), seen(E1, 3))
    assert any("delivered again or out of order" in p for p in check_reader(reader(*log), HISTORY))


def test_an_epoch_change_must_say_recovered_false() -> None:
    history = History(E2, 1, [message(1, "n1")])
    told = reader(welcome(E1, 0), seen(E1, 1), welcome(E2, 1, recovered=False), seen(E2, 1, "n1"))
    assert check_reader(told, history) == []
    untold = reader(welcome(E1, 0), seen(E1, 1), welcome(E2, 1, recovered=True), seen(E2, 1, "n1"))
    assert any("but welcome said recovered:true" in p for p in check_reader(untold, history))


def test_a_reader_left_in_an_old_epoch_is_a_problem() -> None:
    history = History(E2, 1, [message(1, "n1")])
    problems = check_reader(reader(welcome(E1, 0), seen(E1, 1)), history)
    assert problems == ["r0: ended in epoch epoch-1, the room is in epoch epoch-2"]


def test_a_leave_for_an_open_connection_is_flapping_unless_its_process_stalled() -> None:
    from chaos.client import Span
    from chaos.presence_rules import check_leaves

    viewer, member = reader(), reader()
    member.name = "r1"
    member.spans.append(Span("c_1", "u1", process=1, opened=1.0))  # still open
    viewer.leaves.append((5.0, "u1"))
    assert "presence flapping" in check_leaves([viewer, member], 0.0, stalled_process=None)[0]
    assert check_leaves([viewer, member], 0.0, stalled_process=1) == []
    member.spans[0].closed = 5.5  # closed as the leave came: not a flap
    assert check_leaves([viewer, member], 0.0, stalled_process=None) == []
    # A user is one member: a leave decided before it came back on a new connection
    # may arrive just after that welcome; one open long before it is a flap.
    member.spans.append(Span("c_2", "u1", process=0, opened=4.5))
    assert check_leaves([viewer, member], 0.0, stalled_process=None) == []
    member.spans.append(Span("c_3", "u1", process=0, opened=2.0))
    assert "presence flapping" in check_leaves([viewer, member], 0.0, stalled_process=None)[0]
