-- wrk script: the non-streaming chat request every latency/throughput section sends.
wrk.method = "POST"
wrk.body = '{"messages":[{"role":"user","content":"Hello"}]}'
wrk.headers["Content-Type"] = "application/json"
