from cloister.cli.main import main

main()
