-- POST without a body: kuard's dequeue, or an idle long poll when the URL has ?wait=S.
wrk.method = "POST"
