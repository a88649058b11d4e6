import time
from rpc import RPCServer

# Beispiel-Funktionen
def add(a, b):
    """Addiert zwei Zahlen."""
    return a + b

def slow_multiply(a, b):
    """Multipliziert mit Verzögerung."""
    time.sleep(1)
    return a * b

if __name__ == "__main__":
    server = RPCServer(
        password="geheim",
        server_name="Rechner1",
        host="localhost",
        port=8421,
        timeout=5000,
        workers=4
    )

    server.add_external_function(add, "add")
    server.add_external_function(slow_multiply, "mul")

    print("Starte RPC-Server auf tcp://localhost:8421 …")
    server.serve_forever()
