import aioflow as af


async def test_three_blocks_keep_order() -> None:
    @af.block
    async def inc(x: int) -> int:
        return x + 1

    @af.block
    def double(x: int) -> int:
        return 2 * x

    pipe = inc >> double
    assert await pipe.run(range(5)) == [2, 4, 6, 8, 10]
