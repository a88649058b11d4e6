from rpc import RPCClient

if __name__ == "__main__":
    client = RPCClient(
        password="geheim",
        host="localhost",
        port=8421
    )

    try:
        result_add = client.add(5, 7)
        print(f"5 + 7 = {result_add}")

        result_mul = client.mul(3, 4)
        print(f"3 * 4 = {result_mul}")

    except Exception as e:
        print(f"Fehler beim RPC-Aufruf: {e}")
