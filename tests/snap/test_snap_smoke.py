from snap_support import posted_count


async def test_inquiry_then_payment_posts_once(gateway_server, bank, bills):
    bill = await bills.create(workers=3)
    inquiry = await bank.inquiry(bill.payment_code)
    assert inquiry.code == "2002400", inquiry.body
    payment = await bank.pay(bill.payment_code, bill.total_rupiah, inquiry.request_id)
    assert payment.code == "2002500", payment.body
    assert await posted_count(gateway_server.pool) == 1
