from jobgate.cli_fast import main

main()
