"""The gRPC contract, package `sharerank.v1`: the .proto files and the code `make proto` generates from them."""
