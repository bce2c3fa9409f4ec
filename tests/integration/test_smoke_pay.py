from bank_adapters.base import PayCommand, PayOutcome


async def test_pay_posts_once(payments, bills, pool):
    bill = await bills.create(workers=3)
    cmd = PayCommand(bill.payment_code, bill.total_rupiah, "test:bank", "key-1", "ref-1")
    first = await payments.pay(cmd)
    assert first.outcome == PayOutcome.POSTED
    again = await payments.pay(cmd)
    assert again.outcome == PayOutcome.REPLAYED
    assert again.payment_id == first.payment_id
    assert await pool.fetchval("select count(*) from journal_entries") == 1
