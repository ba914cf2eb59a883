from propylon.cli.entry import main

main()
