"""Bills and bill lines refuse the same bad writes since migration 0012 moved
their foreign keys and the bill-total check from one trigger per row to one
check per statement (and one per transaction at commit). Every bad row here is
written with plain SQL, as any code path could write it, and must be refused
with the SQLSTATE the foreign keys and the old trigger used."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import os

import asyncpg
import pytest

from gateway.domain import codes

PERIOD = "2025-08"
DUE = dt.date(2025, 9, 15)
EXPIRES = dt.datetime(2025, 12, 15, tzinfo=dt.UTC)
_serials = itertools.count(1)
_kpjs = itertools.count(1)

# (participant_id, program, employer_rupiah, worker_rupiah, late_fee_source_bill_id, late_fee_months)
Line = tuple


async def _employer(conn: asyncpg.Connection, npp: str) -> str:
    await conn.execute(
        """insert into employers (npp, name, regency_code, size_class, jkk_risk_class, api_key_sha256)
           values ($1, 'Checks ' || $1, '6171', 'small', 1, $2)""",
        npp, hashlib.sha256(os.urandom(32)).digest(),
    )
    return npp


async def _participant(conn: asyncpg.Connection, npp: str, segment: str = "PU") -> int:
    n = next(_kpjs)
    return await conn.fetchval(
        """insert into participants (kpj, npp, nik, name, wage_rupiah, segment, regency_code)
           values ($1, $2, $3, 'Worker', 3000000, $4, '6171') returning id""",
        f"{70_000_000_000 + n:011d}", npp, f"{6171010101700000 + n:016d}", segment,
    )


async def _insert_bill(conn, npp: str, participant_id: int | None, total: int, line_count: int, period: str = PERIOD) -> int:
    return await conn.fetchval(
        """insert into bills (payment_code, npp, kind, participant_id, period, due_date, expires_at, total_rupiah, line_count)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning id""",
        codes.make_payment_code(next(_serials)), npp, "BPU" if participant_id else "PU", participant_id, period, DUE,
        EXPIRES, total, line_count,
    )


async def _insert_lines(conn, bill_id: int, npp: str, lines: list[Line]) -> None:
    """All the lines in one statement, as the wage report's COPY does."""
    await conn.copy_records_to_table(
        "bill_lines",
        records=[(bill_id, n, npp, pid, program, 1000, er, wr, 0, src, months)
                 for n, (pid, program, er, wr, src, months) in enumerate(lines, start=1)],
        columns=["bill_id", "line_no", "npp", "participant_id", "program", "basis_rupiah", "employer_rupiah",
                 "worker_rupiah", "government_rupiah", "late_fee_source_bill_id", "late_fee_months"],
    )


async def _bill(conn, npp: str, participant_id: int | None, lines: list[Line], *, total: int | None = None,
                line_count: int | None = None, period: str = PERIOD) -> int:
    """A bill and its lines, the way `submit_wage_report` writes them."""
    right_total = sum(line[2] + line[3] for line in lines)
    bill_id = await _insert_bill(conn, npp, participant_id, right_total if total is None else total,
                                 len(lines) if line_count is None else line_count, period)
    if lines:
        await _insert_lines(conn, bill_id, npp, lines)
    return bill_id


def _bpu_lines(pid: int) -> list[Line]:
    return [(pid, "JKK", 0, 20000, None, None), (pid, "JKM", 0, 6800, None, None)]


@pytest.fixture
async def world(pool):
    """One employer with a PU and a BPU participant."""
    async with pool.acquire() as conn:
        npp = await _employer(conn, "CHK00001")
        return {"npp": npp, "pu": await _participant(conn, npp), "bpu": await _participant(conn, npp, "BPU")}


async def _bill_count(pool) -> int:
    return await pool.fetchval("select count(*) from bills")


async def test_a_well_formed_bill_and_its_lines_are_accepted(pool, world):
    async with pool.acquire() as conn, conn.transaction():
        bill_id = await _bill(conn, world["npp"], world["bpu"], _bpu_lines(world["bpu"]))
    assert await pool.fetchval("select total_rupiah from bills where id = $1", bill_id) == 26800


# ------------------------------------------------------------------ orphans --


async def test_a_line_of_a_bill_that_does_not_exist_is_refused(pool, world):
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await conn.execute(
                """insert into bill_lines (bill_id, line_no, npp, participant_id, program, basis_rupiah, employer_rupiah,
                                           worker_rupiah, government_rupiah)
                   values (987654, 1, $1, $2, 'JKM', 1, 0, 6800, 0)""",
                world["npp"], world["bpu"],
            )
        assert refused.value.constraint_name == "bill_lines_bill_id_fkey"
        with pytest.raises(asyncpg.ForeignKeyViolationError):  # through COPY too
            await _insert_lines(conn, 987654, world["npp"], _bpu_lines(world["bpu"]))
    assert await pool.fetchval("select count(*) from bill_lines") == 0


@pytest.mark.parametrize("column", ["bill_id", "participant_id"])
async def test_one_orphan_among_thousands_of_lines_refuses_the_whole_statement(pool, world, column):
    async with pool.acquire() as conn, conn.transaction():
        bill_id = await _bill(conn, world["npp"], None, [(world["pu"], "JKM", 100, 0, None, None)] * 2000)
    async with pool.acquire() as conn:
        orphan = {column: 987654}  # line 1500 of 3,000 points nowhere
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await conn.execute(
                """insert into bill_lines (bill_id, line_no, npp, participant_id, program, basis_rupiah, employer_rupiah,
                                           worker_rupiah, government_rupiah)
                   select case when n = 1500 then coalesce($4::bigint, $1) else $1 end, 10000 + n, $2,
                          case when n = 1500 then coalesce($5::bigint, $3) else $3 end, 'JKM', 1, 100, 0, 0
                     from generate_series(1, 3000) n""",
                bill_id, world["npp"], world["pu"], orphan.get("bill_id"), orphan.get("participant_id"),
            )
        assert refused.value.constraint_name == f"bill_lines_{column}_fkey"
        assert "987654" in refused.value.detail
    assert await pool.fetchval("select count(*) from bill_lines") == 2000


async def test_a_line_of_a_participant_that_does_not_exist_is_refused(pool, world):
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            async with conn.transaction():
                await _bill(conn, world["npp"], None, [(world["pu"], "JKK", 100, 0, None, None), (987654, "JKM", 100, 0, None, None)])
        assert refused.value.constraint_name == "bill_lines_participant_id_fkey"
    assert await _bill_count(pool) == 0


async def test_a_late_fee_line_for_a_bill_that_does_not_exist_is_refused(pool, world):
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            async with conn.transaction():
                await _bill(conn, world["npp"], None, [(world["pu"], "JKK", 100, 0, None, None), (None, "DENDA", 50, 0, 987654, 1)])
        assert refused.value.constraint_name == "bill_lines_late_fee_source_bill_id_fkey"
    assert await _bill_count(pool) == 0


async def test_a_bill_of_an_employer_or_participant_that_does_not_exist_is_refused(pool, world):
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            async with conn.transaction():
                await _bill(conn, "NOSUCH01", None, [(world["pu"], "JKK", 100, 0, None, None)])
        assert refused.value.constraint_name == "bills_npp_fkey"
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            async with conn.transaction():
                await _insert_bill(conn, world["npp"], 987654, 26800, 2)
        assert refused.value.constraint_name == "bills_participant_id_fkey"
    assert await _bill_count(pool) == 0


# ------------------------------------------------------------- bill totals --


async def test_a_bill_whose_total_differs_from_its_lines_is_refused_at_commit(pool, world):
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="does not equal the sum of its lines"):
            async with conn.transaction():
                await _bill(conn, world["npp"], world["bpu"], _bpu_lines(world["bpu"]), total=26801)
        with pytest.raises(asyncpg.CheckViolationError, match=r"\(3 lines\) does not equal the sum of its lines 26800 \(2 lines\)"):
            async with conn.transaction():
                await _bill(conn, world["npp"], world["bpu"], _bpu_lines(world["bpu"]), line_count=3)
    assert await _bill_count(pool) == 0


async def test_a_bill_whose_lines_never_came_is_refused_at_commit(pool, world):
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await _insert_bill(conn, world["npp"], world["bpu"], 26800, 2)
    assert await _bill_count(pool) == 0


async def test_a_line_added_later_in_the_transaction_is_counted(pool, world):
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                bill_id = await _bill(conn, world["npp"], world["bpu"], _bpu_lines(world["bpu"]))
                await conn.execute(
                    """insert into bill_lines (bill_id, line_no, npp, participant_id, program, basis_rupiah, employer_rupiah,
                                               worker_rupiah, government_rupiah) values ($1, 3, $2, $3, 'JKM', 1, 0, 1, 0)""",
                    bill_id, world["npp"], world["bpu"],
                )
    assert await _bill_count(pool) == 0


async def _many_bills(conn, npp: str, participants: list[int], wrong: int | None) -> list[int]:
    """One bill per participant in one INSERT and all their lines in one more,
    as the province billing writes them; bill number `wrong` is one rupiah off."""
    ids = await conn.fetch(
        """insert into bills (payment_code, npp, kind, participant_id, period, due_date, expires_at, total_rupiah, line_count)
           select code, $1, 'BPU', pid, $2, $3, $4, 26800 + case when n = $5 then 1 else 0 end, 2
             from unnest($6::text[], $7::bigint[]) with ordinality as t(code, pid, n)
           order by n returning id, participant_id""",
        npp, PERIOD, DUE, EXPIRES, wrong, [codes.make_payment_code(next(_serials)) for _ in participants], participants,
    )
    await conn.execute(
        """insert into bill_lines (bill_id, line_no, npp, participant_id, program, basis_rupiah, employer_rupiah,
                                   worker_rupiah, government_rupiah)
           select b.id, x.line_no, $1, b.pid, x.program, 1000, 0, x.amount, 0
             from unnest($2::bigint[], $3::bigint[]) as b(id, pid)
            cross join (values (1, 'JKK', 20000), (2, 'JKM', 6800)) as x(line_no, program, amount)""",
        npp, [r["id"] for r in ids], [r["participant_id"] for r in ids],
    )
    return [r["id"] for r in ids]


async def test_one_wrong_bill_among_hundreds_written_set_based_is_refused_and_named(pool, world):
    async with pool.acquire() as conn:
        participants = [await _participant(conn, world["npp"], "BPU") for _ in range(300)]
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            async with conn.transaction():
                ids = await _many_bills(conn, world["npp"], participants, wrong=217)
                wrong_id = ids[216]
        assert f"bill {wrong_id} total 26801" in str(refused.value)
        async with conn.transaction():
            await _many_bills(conn, world["npp"], participants, wrong=None)
    assert await _bill_count(pool) == 300


async def test_bills_interleaved_with_another_transactions_bills_are_each_checked(pool, world):
    """Another transaction's bill lands between two of this one's: the commit
    check still finds the wrong one among them."""
    npp, pid = world["npp"], world["bpu"]
    async with pool.acquire() as first, pool.acquire() as second:
        for wrong, periods in ((True, ("2024-01", "2024-02", "2024-03")), (False, ("2024-04", "2024-05", "2024-06"))):
            tx = first.transaction()
            await tx.start()
            a = await _insert_bill(first, npp, pid, 26800, 2, period=periods[0])
            async with second.transaction():
                await _bill(second, npp, pid, _bpu_lines(pid), period=periods[1])
            c = await _insert_bill(first, npp, pid, 26801 if wrong else 26800, 2, period=periods[2])
            await _insert_lines(first, a, npp, _bpu_lines(pid))
            await _insert_lines(first, c, npp, _bpu_lines(pid))
            if wrong:
                with pytest.raises(asyncpg.CheckViolationError, match=f"bill {c} total 26801"):
                    await tx.commit()
            else:
                await tx.commit()
    assert [r["period"] for r in await pool.fetch("select period from bills order by id")] == [
        "2024-02", "2024-04", "2024-05", "2024-06"]


async def test_a_bill_claiming_another_transaction_inserted_it_is_still_checked(pool, world):
    """created_xact tells the commit check which bills of an id range are this
    transaction's; a bill that lies about it is checked on its own."""
    npp, pid = world["npp"], world["bpu"]
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="total 26801"):
            async with conn.transaction():
                await _bill(conn, npp, pid, _bpu_lines(pid), period="2024-01")
                liar = await conn.fetchval(
                    """insert into bills (payment_code, npp, kind, participant_id, period, due_date, expires_at,
                                          total_rupiah, line_count, created_xact)
                       values ($1, $2, 'BPU', $3, '2024-02', $4, $5, 26801, 2, '3') returning id""",
                    codes.make_payment_code(next(_serials)), npp, pid, DUE, EXPIRES,
                )
                await _insert_lines(conn, liar, npp, _bpu_lines(pid))
                await _bill(conn, npp, pid, _bpu_lines(pid), period="2024-03")
    assert await _bill_count(pool) == 0


async def test_checked_early_then_a_new_bill_without_lines_is_still_refused(pool, world):
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await _bill(conn, world["npp"], world["bpu"], _bpu_lines(world["bpu"]))
                await conn.execute("set constraints all immediate")  # checks the first bill now: it is right
                await _insert_bill(conn, world["npp"], world["bpu"], 26800, 2, period="2025-09")
    assert await _bill_count(pool) == 0


async def test_a_bill_inserted_into_a_range_checked_earlier_is_checked_again(pool, world):
    """A check forced early vouches for the ids it saw, not for a bill written
    later into a gap of that range (an explicit id, OVERRIDING SYSTEM VALUE)."""
    npp, pid = world["npp"], world["bpu"]
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="total 26801"):
            async with conn.transaction():
                first = await _bill(conn, npp, pid, _bpu_lines(pid), period="2024-01")
                gap = await conn.fetchval("select nextval(pg_get_serial_sequence('bills', 'id'))")
                await _bill(conn, npp, pid, _bpu_lines(pid), period="2024-02")
                await conn.execute("set constraints all immediate")  # both right: the range is checked
                await conn.execute("set constraints all deferred")
                assert first < gap
                await conn.execute(
                    """insert into bills (id, payment_code, npp, kind, participant_id, period, due_date, expires_at,
                                          total_rupiah, line_count)
                       overriding system value values ($1, $2, $3, 'BPU', $4, '2024-03', $5, $6, 26801, 2)""",
                    gap, codes.make_payment_code(next(_serials)), npp, pid, DUE, EXPIRES,
                )
                await _insert_lines(conn, gap, npp, _bpu_lines(pid))
    assert await _bill_count(pool) == 0


async def test_a_wrong_bill_inside_a_savepoint_is_refused_and_a_rolled_back_one_is_forgotten(pool, world):
    npp = world["npp"]
    async with pool.acquire() as conn:
        async with conn.transaction():
            with pytest.raises(RuntimeError):
                async with conn.transaction():  # a savepoint, rolled back with its wrong bill
                    await _insert_bill(conn, npp, world["bpu"], 1, 2)
                    raise RuntimeError("roll back the savepoint")
            await _bill(conn, npp, world["bpu"], _bpu_lines(world["bpu"]))
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await _bill(conn, npp, world["bpu"], _bpu_lines(world["bpu"]), period="2025-09")
                async with conn.transaction():  # a savepoint, released: its wrong bill stays
                    await _bill(conn, npp, None, [(world["pu"], "JKK", 5, 0, None, None)], total=6, period="2025-09")
    assert await _bill_count(pool) == 1


# ------------------------------------------------- the referenced rows' side --


async def test_a_referenced_bill_participant_or_employer_cannot_be_deleted_or_rekeyed(pool, world):
    async with pool.acquire() as conn:
        async with conn.transaction():
            old = await _bill(conn, world["npp"], None, [(world["pu"], "JKK", 100, 0, None, None)], period="2025-07")
            await _bill(conn, world["npp"], None, [(world["pu"], "JKK", 100, 0, None, None), (None, "DENDA", 2, 0, old, 1)])
            # An employer whose only tie is a bill (its line bills the first employer's worker).
            lone = await _employer(conn, "CHK00002")
            await _bill(conn, lone, None, [(world["pu"], "JKM", 100, 0, None, None)])
            spare = await _participant(conn, world["npp"], "BPU")
        refusals = [
            ("delete from bills where id = $1", old, "bill_lines_bill_id_fkey"),
            ("update bills set id = default where id = $1", old, "bill_lines_bill_id_fkey"),
            ("delete from participants where id = $1", world["pu"], "bill_lines_participant_id_fkey"),
            ("update participants set id = default where id = $1", world["pu"], "bill_lines_participant_id_fkey"),
            ("delete from employers where npp = $1", lone, "bills_npp_fkey"),
            ("update employers set npp = 'CHK00003' where npp = $1", lone, "bills_npp_fkey"),
        ]
        for sql, key, constraint in refusals:
            with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
                await conn.execute(sql, key)
            assert refused.value.constraint_name == constraint, sql
        # A bill only a late fee refers to (its own lines are gone with the
        # triggers off, as a careless fix could do) is still kept.
        async with conn.transaction():
            await conn.execute("set local session_replication_role = replica")
            await conn.execute("delete from bill_lines where bill_id = $1", old)
        with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
            await conn.execute("delete from bills where id = $1", old)
        assert refused.value.constraint_name == "bill_lines_late_fee_source_bill_id_fkey"
        # What nothing references can still go.
        await conn.execute("delete from participants where id = $1", spare)
    assert await _bill_count(pool) == 3


async def test_truncating_bills_or_their_parents_without_bill_lines_is_refused(pool, world):
    async with pool.acquire() as conn:
        async with conn.transaction():
            await _bill(conn, world["npp"], world["bpu"], _bpu_lines(world["bpu"]))
        for sql in ("truncate bills cascade", "truncate participants cascade", "truncate employers cascade"):
            with pytest.raises(asyncpg.FeatureNotSupportedError, match="references it"):
                await conn.execute(sql)
        assert await _bill_count(pool) == 1
        await conn.execute("truncate employers, participants, bills, bill_lines cascade")
    assert await _bill_count(pool) == 0


async def test_under_repeatable_read_deletes_are_refused_and_orphans_still_caught(pool, world):
    async with pool.acquire() as conn:
        spare = await _participant(conn, world["npp"], "BPU")
        with pytest.raises(asyncpg.FeatureNotSupportedError, match="READ COMMITTED"):
            async with conn.transaction(isolation="repeatable_read"):
                await conn.execute("delete from participants where id = $1", spare)
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with conn.transaction(isolation="repeatable_read"):
                await _bill(conn, world["npp"], None, [(987654, "JKK", 100, 0, None, None)])
        async with conn.transaction(isolation="repeatable_read"):
            await _bill(conn, world["npp"], world["bpu"], _bpu_lines(world["bpu"]))
    assert await _bill_count(pool) == 1


async def _wait_until_blocked(pool, conn: asyncpg.Connection) -> None:
    pid = conn.get_server_pid()
    for _ in range(500):
        if await pool.fetchval("select wait_event_type = 'Lock' from pg_stat_activity where pid = $1", pid):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the second transaction never waited for the first")


async def test_a_participant_deleted_while_its_bill_is_being_written_is_refused_either_way(pool, world):
    """Two transactions at once: whichever commits first, the second one is
    refused, so no bill line is ever left without its participant."""
    async with pool.acquire() as biller, pool.acquire() as remover:
        victim = await _participant(remover, world["npp"], "BPU")
        # The bill first: the delete waits for it, then sees its lines.
        tx = biller.transaction()
        await tx.start()
        await _bill(biller, world["npp"], victim, _bpu_lines(victim))
        delete = asyncio.ensure_future(remover.execute("delete from participants where id = $1", victim))
        await _wait_until_blocked(pool, remover)
        await tx.commit()
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await delete
        # The delete first: the bill waits for it, then finds the participant gone.
        victim = await _participant(remover, world["npp"], "BPU")
        tx = remover.transaction()
        await tx.start()
        await remover.execute("delete from participants where id = $1", victim)
        write = asyncio.ensure_future(_billed_in_a_transaction(biller, world["npp"], victim))
        await _wait_until_blocked(pool, biller)
        await tx.commit()
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await write
    assert await pool.fetchval("select count(*) from bill_lines l where not exists (select 1 from participants p where p.id = l.participant_id)") == 0


async def _billed_in_a_transaction(conn, npp: str, participant_id: int) -> None:
    async with conn.transaction():
        await _bill(conn, npp, participant_id, _bpu_lines(participant_id), period="2025-09")
