from backpack.cli.main import main

main()
